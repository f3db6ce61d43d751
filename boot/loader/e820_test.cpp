#include "boot/loader/e820.hpp"

#include <doctest/doctest.h>

#include <array>

#include "boot/loader/initrd_placement.hpp"
#include "boot/loader/load_plan.hpp"
#include "boot/loader/loader_test_support.hpp"
#include "boot/x86_layout.hpp"

using namespace kestrel;
using namespace kestrel::boot;
using test::kMiB;

TEST_CASE("e820: one region from 0 gives low RAM, the reserved BIOS hole, high RAM, ECAM") {
    std::array ram{GuestRegionSpec{GuestAddress(0), 256 * kMiB}};
    auto map = build_e820_map(ram);
    REQUIRE(map.size() == 4);
    CHECK(map[0] == E820Entry{0, x86::kEbdaStart, E820Type::Ram});
    CHECK(map[1] == E820Entry{x86::kEbdaStart, 0x100000 - x86::kEbdaStart, E820Type::Reserved});
    CHECK(map[2] == E820Entry{0x100000, 255 * kMiB, E820Type::Ram});
    CHECK(map[3] == E820Entry{x86::kPciEcamStart, x86::kPciEcamSize, E820Type::Reserved});
}

TEST_CASE("e820: RAM split around the MMIO hole, regions given out of order") {
    std::array ram{GuestRegionSpec{GuestAddress(x86::kMmioHoleEnd), 1024 * kMiB},
                   GuestRegionSpec{GuestAddress(0), x86::kMmioHoleStart}};
    auto map = build_e820_map(ram);
    REQUIRE(map.size() == 5);
    CHECK(map[2] == E820Entry{0x100000, x86::kMmioHoleStart - 0x100000, E820Type::Ram});
    CHECK(map[3] == E820Entry{x86::kPciEcamStart, x86::kPciEcamSize, E820Type::Reserved});
    CHECK(map[4] == E820Entry{x86::kMmioHoleEnd, 1024 * kMiB, E820Type::Ram});
    for (size_t i = 1; i < map.size(); ++i) CHECK(map[i - 1].addr + map[i - 1].size <= map[i].addr);
}

TEST_CASE("e820: a region wrapping past 2^64 is clipped, not wrapped") {
    std::array ram{GuestRegionSpec{GuestAddress(0), 2 * kMiB},
                   GuestRegionSpec{GuestAddress(~0ull - 0xfff), 0x2000}};
    auto map = build_e820_map(ram);
    REQUIRE(map.size() == 5);
    CHECK(map[4].addr == ~0ull - 0xfff);
    CHECK(map[4].size == 0xfff);
}

TEST_CASE("initrd placement: highest page-aligned spot above the kernel and below the limit") {
    std::array ram{GuestRegionSpec{GuestAddress(0), 256 * kMiB}};
    auto at = place_initrd(ram, 0x1234, 32 * kMiB, UINT64_MAX);
    REQUIRE(at);
    CHECK(at->raw == 256 * kMiB - 0x2000);
    at = place_initrd(ram, 0x1000, 32 * kMiB, 100 * kMiB + 0x800);
    REQUIRE(at);
    CHECK(at->raw == 100 * kMiB - 0x1000);
    CHECK_FALSE(place_initrd(ram, 225 * kMiB, 32 * kMiB, UINT64_MAX));  // collides with kernel
    CHECK(place_initrd(ram, 224 * kMiB, 32 * kMiB, UINT64_MAX)->raw == 32 * kMiB);
    CHECK_FALSE(place_initrd(ram, 0, 32 * kMiB, UINT64_MAX));
    CHECK_FALSE(place_initrd(ram, 0x1000, UINT64_MAX - 5, UINT64_MAX));  // lowest rounds over
}

TEST_CASE("initrd placement: prefers the higher region, respects the limit") {
    std::array ram{GuestRegionSpec{GuestAddress(0), x86::kMmioHoleStart},
                   GuestRegionSpec{GuestAddress(x86::kMmioHoleEnd), 1024 * kMiB}};
    CHECK(place_initrd(ram, kMiB, 64 * kMiB, UINT64_MAX)->raw ==
          x86::kMmioHoleEnd + 1023 * kMiB);
    CHECK(place_initrd(ram, kMiB, 64 * kMiB, x86::kMmioHoleEnd)->raw ==
          x86::kMmioHoleStart - kMiB);
}

TEST_CASE("load plan: refuses out-of-RAM and overlapping writes before writing anything") {
    auto mem = test::make_memory(16 * kMiB);
    std::array<uint8_t, 16> bytes{1, 2, 3};
    {
        LoadPlan plan;
        plan.copy(GuestAddress(0x1000), bytes, "first");
        plan.copy(GuestAddress(16 * kMiB - 8), bytes, "straddler");
        auto r = plan.apply(mem);
        REQUIRE_FALSE(r);
        CHECK(r.error().message.find("straddler") != std::string::npos);
    }
    {
        LoadPlan plan;
        plan.copy(GuestAddress(0x1000), bytes, "first");
        plan.zero(GuestAddress(0x100f), 4, "second");
        auto r = plan.apply(mem);
        REQUIRE_FALSE(r);
        CHECK(r.error().message.find("overlaps") != std::string::npos);
    }
    CHECK(test::all_zero(mem));
    LoadPlan plan;
    plan.copy(GuestAddress(0x1000), bytes, "first");
    plan.copy_owned(GuestAddress(0x1010), {9, 8}, "second");
    plan.zero(GuestAddress(0x1012), 4, "third");
    REQUIRE(plan.apply(mem));
    CHECK(test::guest<uint8_t>(mem, 0x1002) == 3);
    CHECK(test::guest<uint8_t>(mem, 0x1011) == 8);
}
