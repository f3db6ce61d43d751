#include "cni-shim/ttrpc/frame.hpp"

#include <atomic>
#include <cstdlib>
#include <new>

#include <doctest/doctest.h>

// The largest single allocation made while `tracking` is set on this thread: shows that a
// refused header does not make the decoder allocate what it announced.
namespace {
thread_local bool tracking = false;
thread_local std::size_t largest_allocation = 0;
}  // namespace

void* operator new(std::size_t n) {
    if (tracking && n > largest_allocation) largest_allocation = n;
    if (void* p = std::malloc(n == 0 ? 1 : n)) return p;
    throw std::bad_alloc();
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }

namespace kestrel::ttrpc {
namespace {

std::string bytes(std::initializer_list<unsigned> b) {
    std::string s;
    for (unsigned v : b) s.push_back(static_cast<char>(v));
    return s;
}

std::string header_bytes(std::uint32_t length, std::uint32_t stream, std::uint8_t type, std::uint8_t flags = 0) {
    auto h = encode_header(FrameHeader{length, stream, type, flags});
    return std::string(reinterpret_cast<const char*>(h.data()), h.size());
}

TEST_CASE("header: big-endian length, stream id, type, flags") {
    auto h = encode_header(FrameHeader{0x01020304, 0x05060708, 2, 0x0a});
    CHECK(std::string(reinterpret_cast<const char*>(h.data()), h.size()) ==
          bytes({1, 2, 3, 4, 5, 6, 7, 8, 2, 0x0a}));
    FrameHeader back = decode_header(h);
    CHECK(back.length == 0x01020304);
    CHECK(back.stream_id == 0x05060708);
    CHECK(back.type == 2);
    CHECK(back.flags == 0x0a);
}

TEST_CASE("encode_frame: header then data") {
    CHECK(encode_frame(3, MessageType::Request, "abc") == bytes({0, 0, 0, 3, 0, 0, 0, 3, 1, 0, 'a', 'b', 'c'}));
    CHECK(encode_frame(0x80000001u, MessageType::Response, "", 4) == bytes({0, 0, 0, 0, 0x80, 0, 0, 1, 2, 4}));
}

TEST_CASE("decoder: fed byte by byte, completes exactly at the last byte") {
    std::string wire = encode_frame(7, MessageType::Request, "hello");
    FrameDecoder d;
    for (std::size_t i = 0; i < wire.size(); ++i) {
        std::string_view one(&wire[i], 1);
        auto r = d.feed(one);
        REQUIRE(r.has_value());
        CHECK(one.empty());
        if (i + 1 < wire.size()) {
            CHECK_FALSE(r->has_value());
            CHECK_FALSE(d.at_boundary());
        } else {
            REQUIRE(r->has_value());
            CHECK((*r)->stream_id == 7);
            CHECK((*r)->type == MessageType::Request);
            CHECK((*r)->data == "hello");
        }
    }
    CHECK(d.at_boundary());
}

TEST_CASE("decoder: two frames in one chunk come out one per feed") {
    std::string wire = encode_frame(1, MessageType::Request, "first") + encode_frame(3, MessageType::Response, "2nd", 1);
    std::string_view in(wire);
    FrameDecoder d;
    auto a = d.feed(in);
    REQUIRE((a && *a));
    CHECK((*a)->stream_id == 1);
    CHECK((*a)->data == "first");
    CHECK(in.size() == kHeaderSize + 3);
    auto b = d.feed(in);
    REQUIRE((b && *b));
    CHECK((*b)->stream_id == 3);
    CHECK((*b)->type == MessageType::Response);
    CHECK((*b)->flags == 1);
    CHECK((*b)->data == "2nd");
    CHECK(in.empty());
}

TEST_CASE("decoder: a split inside the header and inside the data") {
    std::string wire = encode_frame(5, MessageType::Request, "0123456789");
    FrameDecoder d;
    std::string_view p1(wire.data(), 4), p2(wire.data() + 4, 9), p3(wire.data() + 13, wire.size() - 13);
    CHECK_FALSE(d.feed(p1)->has_value());
    CHECK_FALSE(d.feed(p2)->has_value());
    auto r = d.feed(p3);
    REQUIRE((r && *r));
    CHECK((*r)->data == "0123456789");
}

TEST_CASE("decoder: a zero-length frame is complete with its header") {
    std::string wire = encode_frame(9, MessageType::Request, "");
    std::string_view in(wire);
    FrameDecoder d;
    auto r = d.feed(in);
    REQUIRE((r && *r));
    CHECK((*r)->stream_id == 9);
    CHECK((*r)->data.empty());
}

TEST_CASE("decoder: exactly 4 MiB is accepted") {
    std::string data(kMaxDataLength, 'x');
    std::string wire = encode_frame(1, MessageType::Request, data);
    std::string_view in(wire);
    FrameDecoder d;
    auto r = d.feed(in);
    REQUIRE((r && *r));
    CHECK((*r)->data.size() == kMaxDataLength);
}

TEST_CASE("decoder: an oversized length is refused without allocating it, then skipped") {
    std::string huge_header = header_bytes(kMaxDataLength + 1, 11, 1);
    FrameDecoder d;
    std::string_view in(huge_header);
    largest_allocation = 0;
    tracking = true;
    auto r = d.feed(in);
    tracking = false;
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error().kind == FrameError::TooLong);
    CHECK(r.error().header.stream_id == 11);
    CHECK(r.error().header.length == kMaxDataLength + 1);
    CHECK(largest_allocation < 4096);

    // Its data is skipped and the stream stays in step: the next frame decodes.
    std::string rest = std::string(kMaxDataLength + 1, 'z') + encode_frame(13, MessageType::Request, "next");
    std::string_view in2(rest);
    tracking = true;
    auto n = d.feed(in2);
    tracking = false;
    REQUIRE((n && *n));
    CHECK((*n)->stream_id == 13);
    CHECK((*n)->data == "next");
    CHECK(largest_allocation < 4096);
}

TEST_CASE("decoder: the largest length a header can hold is refused too") {
    std::string h = header_bytes(0xffffffffu, 1, 1);
    std::string_view in(h);
    FrameDecoder d;
    auto r = d.feed(in);
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error().kind == FrameError::TooLong);
    CHECK_FALSE(d.at_boundary());
}

TEST_CASE("decoder: an unknown message type (3, stream data) is refused and skipped") {
    std::string wire = header_bytes(3, 1, 3) + "abc" + encode_frame(3, MessageType::Request, "ok");
    std::string_view in(wire);
    FrameDecoder d;
    auto r = d.feed(in);
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error().kind == FrameError::UnknownType);
    CHECK(r.error().header.type == 3);
    auto n = d.feed(in);
    REQUIRE((n && *n));
    CHECK((*n)->stream_id == 3);
    CHECK((*n)->data == "ok");
    CHECK(in.empty());
}

}  // namespace
}  // namespace kestrel::ttrpc
