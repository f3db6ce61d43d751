// libFuzzer target for the ttrpc frame decoder (cni-shim/ttrpc/frame.*) and the parsing of
// ttrpc.Request / ttrpc.Response from frame data: what a shim reads from containerd, or a
// client from a server, byte for byte.
//
// Input: u8 n (& 15) chunk lengths, then n bytes each giving one chunk's length (1..256),
// then the stream. The stream is fed in those chunks (the rest in one last chunk). Checks,
// besides the sanitizers:
//  - the chunking changes nothing: the frames and refusals equal those of feeding the
//    whole stream at once;
//  - every frame holds at most kMaxDataLength bytes and has a known type; every refusal is a
//    length over the limit or an unknown type, as its header says;
//  - a decoded frame, encoded again, decodes to the same frame;
//  - the chunked decoder ends at a frame boundary exactly when the whole-stream one does.
#include <cstdint>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include <google/protobuf/stubs/logging.h>

#include "cni-shim/proto/ttrpc.pb.h"
#include "cni-shim/ttrpc/frame.hpp"

using namespace kestrel::ttrpc;

namespace {

void check(bool ok) {
    if (!ok) __builtin_trap();
}

using Event = std::variant<Frame, DecodeError>;

bool same(const Event& a, const Event& b) {
    if (a.index() != b.index()) return false;
    if (auto* fa = std::get_if<Frame>(&a)) {
        auto& fb = std::get<Frame>(b);
        return fa->stream_id == fb.stream_id && fa->type == fb.type && fa->flags == fb.flags && fa->data == fb.data;
    }
    auto& ea = std::get<DecodeError>(a);
    auto& eb = std::get<DecodeError>(b);
    return ea.kind == eb.kind && ea.header.length == eb.header.length &&
           ea.header.stream_id == eb.header.stream_id && ea.header.type == eb.header.type &&
           ea.header.flags == eb.header.flags;
}

void feed_all(FrameDecoder& d, std::string_view chunk, std::vector<Event>& out) {
    while (!chunk.empty()) {
        std::size_t before = chunk.size();
        auto r = d.feed(chunk);
        check(chunk.size() < before || !r.has_value() || r->has_value());  // progress
        if (!r) {
            out.emplace_back(r.error());
        } else if (*r) {
            out.emplace_back(std::move(**r));
        }
    }
}

void check_event(const Event& e) {
    if (auto* f = std::get_if<Frame>(&e)) {
        check(f->data.size() <= kMaxDataLength);
        check(f->type == MessageType::Request || f->type == MessageType::Response);
        std::string again = encode_frame(f->stream_id, f->type, f->data, f->flags);
        std::string_view in(again);
        FrameDecoder d;
        auto r = d.feed(in);
        check(r && *r && in.empty() && d.at_boundary());
        check(same(Event(std::move(**r)), e));
        if (f->type == MessageType::Request) {
            ::ttrpc::Request req;
            if (req.ParseFromString(f->data)) {
                std::size_t n = req.service().size() + req.method().size() + req.payload().size();
                for (const auto& kv : req.metadata()) n += kv.key().size() + kv.value().size();
                check(n <= f->data.size());
                ::ttrpc::Request back;
                check(back.ParseFromString(req.SerializeAsString()));
                check(back.service() == req.service() && back.method() == req.method() &&
                      back.payload() == req.payload() && back.timeout_nano() == req.timeout_nano() &&
                      back.metadata_size() == req.metadata_size());
            }
        } else {
            ::ttrpc::Response resp;
            if (resp.ParseFromString(f->data)) check(resp.payload().size() <= f->data.size());
        }
        return;
    }
    const auto& err = std::get<DecodeError>(e);
    bool known = err.header.type == 1 || err.header.type == 2;
    check(err.kind == FrameError::TooLong ? err.header.length > kMaxDataLength
                                          : (known == false && err.header.length <= kMaxDataLength));
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
    google::protobuf::SetLogHandler(nullptr);  // malformed input is expected, not news
    return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    std::string_view in(reinterpret_cast<const char*>(data), size);
    std::vector<std::size_t> chunks;
    if (!in.empty()) {
        std::size_t n = static_cast<std::uint8_t>(in[0]) & 15;
        in.remove_prefix(1);
        for (std::size_t i = 0; i < n && !in.empty(); ++i) {
            chunks.push_back(std::size_t{static_cast<std::uint8_t>(in[0])} + 1);
            in.remove_prefix(1);
        }
    }

    std::vector<Event> chunked;
    FrameDecoder d;
    std::string_view rest = in;
    for (std::size_t len : chunks) {
        std::size_t take = std::min(len, rest.size());
        feed_all(d, rest.substr(0, take), chunked);
        rest.remove_prefix(take);
    }
    feed_all(d, rest, chunked);

    std::vector<Event> whole;
    FrameDecoder w;
    feed_all(w, in, whole);
    check(chunked.size() == whole.size());
    for (std::size_t i = 0; i < whole.size(); ++i) check(same(chunked[i], whole[i]));
    check(d.at_boundary() == w.at_boundary());
    for (const Event& e : whole) check_event(e);
    return 0;
}
