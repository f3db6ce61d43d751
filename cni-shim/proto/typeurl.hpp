// Packing events into google.protobuf.Any the way containerd 1.6 reads them: its typeurl
// package (github.com/containerd/typeurl types.go, TypeURL/getTypeByUrl) names a protobuf
// message by its bare full name, e.g. "containerd.events.TaskExit", and looks that exact
// string up. Any::PackFrom would write "type.googleapis.com/containerd.events.TaskExit",
// which containerd 1.6 cannot resolve.
#pragma once

#include <google/protobuf/any.pb.h>
#include <google/protobuf/message.h>

namespace kestrel::shim_proto {

inline void pack_containerd_any(const google::protobuf::Message& event, google::protobuf::Any* out) {
    out->set_type_url(event.GetDescriptor()->full_name());
    out->set_value(event.SerializeAsString());
}

// The inverse: true if `any` holds a T (bare or prefixed type URL) and it parsed.
template <class T>
bool unpack_containerd_any(const google::protobuf::Any& any, T* out) {
    const std::string& url = any.type_url();
    auto slash = url.rfind('/');
    std::string_view name = slash == std::string::npos ? std::string_view(url) : std::string_view(url).substr(slash + 1);
    return name == T::descriptor()->full_name() && out->ParseFromString(any.value());
}

}  // namespace kestrel::shim_proto
