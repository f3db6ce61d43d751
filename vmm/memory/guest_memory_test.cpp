#include "vmm/memory/guest_memory.hpp"

#include <doctest/doctest.h>

#include <array>

using namespace kestrel;

TEST_CASE("guest memory: checked accessors reject out-of-range and overflowing ranges") {
    std::array specs{GuestRegionSpec{GuestAddress(0), 0x10000},
                     GuestRegionSpec{GuestAddress(0x100000), 0x2000}};
    auto mem = GuestMemory::create(specs);
    REQUIRE(mem);
    CHECK(mem->total_size() == 0x12000);
    CHECK(mem->end().raw == 0x102000);

    CHECK(mem->write_obj(GuestAddress(0xfff8), uint64_t{0x1122334455667788}));
    CHECK(*mem->read_obj<uint64_t>(GuestAddress(0xfff8)) == 0x1122334455667788);
    CHECK_FALSE(mem->read_obj<uint64_t>(GuestAddress(0xfffc)));        // straddles end
    CHECK_FALSE(mem->slice(GuestAddress(0x10000), 1));                // in the hole
    CHECK(mem->slice(GuestAddress(0x10000), 0));        // empty range at a region end
    CHECK_FALSE(mem->slice(GuestAddress(0x20000), 0));  // hole, even empty
    CHECK(mem->slice(GuestAddress(0xffff), 1));
    CHECK_FALSE(mem->slice(GuestAddress(0xffffffffffffff00ull), 0x200));  // wraps
    CHECK_FALSE(mem->slice(GuestAddress(0x8), ~uint64_t{0}));             // huge length
    CHECK(mem->slice(GuestAddress(0x101000), 0x1000));
    CHECK_FALSE(mem->slice(GuestAddress(0x101000), 0x1001));
}

TEST_CASE("guest memory: bad region specs are refused") {
    std::array unaligned{GuestRegionSpec{GuestAddress(0x100), 0x1000}};
    CHECK_FALSE(GuestMemory::create(unaligned));
    std::array overlap{GuestRegionSpec{GuestAddress(0), 0x2000},
                       GuestRegionSpec{GuestAddress(0x1000), 0x1000}};
    CHECK_FALSE(GuestMemory::create(overlap));
    std::array empty{GuestRegionSpec{GuestAddress(0), 0}};
    CHECK_FALSE(GuestMemory::create(empty));
}

TEST_CASE("guest memory: VMM writes mark pages dirty only when tracking") {
    std::array specs{GuestRegionSpec{GuestAddress(0), 0x10000}};
    auto mem = GuestMemory::create(specs);
    REQUIRE(mem);
    auto& bm = mem->regions()[0].dirty();
    CHECK(mem->fill(GuestAddress(0x1000), 16, 0xaa));
    CHECK_FALSE(bm.is_dirty(1));
    mem->track_dirty(true);
    CHECK(mem->fill(GuestAddress(0x1ff0), 0x20, 0xbb));  // spans pages 1 and 2
    CHECK(bm.is_dirty(1));
    CHECK(bm.is_dirty(2));
    CHECK_FALSE(bm.is_dirty(3));
    auto words = bm.take();
    CHECK(words[0] == 0b110);
    CHECK_FALSE(bm.is_dirty(1));
}
