#include "migration/memory_state.hpp"

#include <doctest/doctest.h>

#include <string>

using namespace kestrel;
using namespace kestrel::migration;

namespace {

Section section(const char* id, const Encoder& e, uint32_t version = kMemoryStateVersion) {
    return Section{id, version, e.bytes()};
}

std::string refused_message(const Error& e) {
    CHECK(e.kind == ErrorKind::BadRequest);
    return e.message;
}

const std::vector<MemoryRegion> kLayout{{0, 0xc0000000}, {0x100000000, 0x40000000}};

}  // namespace

TEST_CASE("memory state: the layout and a Diff's pages come back") {
    Encoder e;
    encode_memory(e, kLayout);
    auto layout = decode_memory(section(kMemorySection, e));
    REQUIRE(layout.has_value());
    CHECK(*layout == kLayout);
    CHECK(total_size(*layout) == 0x100000000ull);

    DirtyPages pages{std::vector<uint64_t>(0xc0000000 / kStatePage / 64), std::vector<uint64_t>(0x40000000 / kStatePage / 64)};
    pages[0][0] = 0x5;
    pages[1].back() = uint64_t{1} << 63;
    Encoder d;
    encode_memory_diff(d, pages);
    auto back = decode_memory_diff(section(kMemoryDiffSection, d), kLayout);
    REQUIRE(back.has_value());
    CHECK(*back == pages);
}

TEST_CASE("memory state: hostile sections are refused") {
    SUBCASE("overlapping regions") {
        Encoder e;
        encode_memory(e, {{0, 0x200000}, {0x100000, 0x200000}});
        auto r = decode_memory(section(kMemorySection, e));
        REQUIRE_FALSE(r.has_value());
        CHECK(refused_message(r.error()).find("overlaps") != std::string::npos);
    }
    SUBCASE("a region that wraps around") {
        Encoder e;
        encode_memory(e, {{0xfffffffffffff000ull, 0x2000}});
        CHECK_FALSE(decode_memory(section(kMemorySection, e)).has_value());
    }
    SUBCASE("too many regions") {
        Encoder e;
        e.put_u32(kMaxRegions + 1);
        auto r = decode_memory(section(kMemorySection, e));
        REQUIRE_FALSE(r.has_value());
        CHECK(refused_message(r.error()).find("'regions'") != std::string::npos);
    }
    SUBCASE("a Diff bitmap of the wrong size, or naming pages past the region") {
        const std::vector<MemoryRegion> small{{0, 100 * kStatePage}};
        Encoder e;
        e.put_u32(3);  // 100 pages need 2 words
        auto r = decode_memory_diff(section(kMemoryDiffSection, e), small);
        REQUIRE_FALSE(r.has_value());
        CHECK(refused_message(r.error()).find("need 2") != std::string::npos);
        Encoder past;
        encode_memory_diff(past, {{0, uint64_t{1} << 40}});  // page 104 of 100
        auto p = decode_memory_diff(section(kMemoryDiffSection, past), small);
        REQUIRE_FALSE(p.has_value());
        CHECK(refused_message(p.error()).find("past the end") != std::string::npos);
    }
    SUBCASE("another version") {
        Encoder e;
        encode_memory(e, kLayout);
        CHECK_FALSE(decode_memory(section(kMemorySection, e, 2)).has_value());
    }
}
