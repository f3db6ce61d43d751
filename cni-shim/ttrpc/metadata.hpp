// Well-known ttrpc request metadata keys.
#pragma once

#include <string_view>

namespace kestrel::ttrpc {

// Carries the containerd namespace of a call (containerd namespaces/ttrpc.go, TTRPCHeader).
inline constexpr std::string_view kNamespaceKey = "containerd-namespace-ttrpc";

}  // namespace kestrel::ttrpc
