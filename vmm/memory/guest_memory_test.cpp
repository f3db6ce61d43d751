#include "vmm/memory/guest_memory.hpp"

#include <doctest/doctest.h>

#include <unistd.h>

#include <array>
#include <cstdlib>
#include <string>
#include <vector>

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

TEST_CASE("GuestMemory backed by a file: regions map it in order, copy-on-write, size checked") {
    char path[] = "/tmp/kestrel-guestmem-XXXXXX";
    int fd = ::mkstemp(path);
    REQUIRE(fd >= 0);
    ::unlink(path);
    std::vector<uint8_t> bytes(3 * 4096);
    for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<uint8_t>(i / 4096 + 1);
    REQUIRE(::write(fd, bytes.data(), bytes.size()) == static_cast<ssize_t>(bytes.size()));
    // Given high region first: the lower one still takes the file's first bytes.
    const GuestRegionSpec specs[] = {{GuestAddress(0x100000), 4096}, {GuestAddress(0), 2 * 4096}};
    auto mem = GuestMemory::create(specs, fd);
    REQUIRE(mem.has_value());
    uint8_t b = 0;
    REQUIRE(mem->read(GuestAddress(0), std::span(&b, 1)));
    CHECK(b == 1);
    REQUIRE(mem->read(GuestAddress(4096), std::span(&b, 1)));
    CHECK(b == 2);
    REQUIRE(mem->read(GuestAddress(0x100000), std::span(&b, 1)));
    CHECK(b == 3);
    const uint8_t w = 0xee;
    REQUIRE(mem->write(GuestAddress(0x100000), std::span(&w, 1)));
    REQUIRE(::pread(fd, &b, 1, 2 * 4096) == 1);
    CHECK(b == 3);  // the file is not written
    const GuestRegionSpec bigger[] = {{GuestAddress(0), 4 * 4096}};
    auto refused = GuestMemory::create(bigger, fd);
    REQUIRE_FALSE(refused.has_value());
    CHECK(refused.error().message.find("12288 bytes") != std::string::npos);
    ::close(fd);
}

TEST_CASE("guest memory: discard zeroes whole pages inside one region and refuses the rest") {
    std::array specs{GuestRegionSpec{GuestAddress(0), 0x10000},
                     GuestRegionSpec{GuestAddress(0x100000), 0x2000}};
    auto mem = GuestMemory::create(specs);
    REQUIRE(mem);
    REQUIRE(mem->fill(GuestAddress(0), 0x10000, 0xab));
    mem->track_dirty(true);
    (void)mem->regions()[0].dirty().take();
    CHECK(mem->discard(GuestAddress(0x2000), 0x2000));
    CHECK(*mem->read_obj<uint8_t>(GuestAddress(0x1fff)) == 0xab);
    CHECK(*mem->read_obj<uint8_t>(GuestAddress(0x2000)) == 0);
    CHECK(*mem->read_obj<uint8_t>(GuestAddress(0x3fff)) == 0);
    CHECK(*mem->read_obj<uint8_t>(GuestAddress(0x4000)) == 0xab);
    auto& bits = mem->regions()[0].dirty();
    CHECK_FALSE(bits.is_dirty(1));
    CHECK(bits.is_dirty(2));
    CHECK(bits.is_dirty(3));
    CHECK_FALSE(bits.is_dirty(4));
    CHECK_FALSE(mem->discard(GuestAddress(0x2001), 0x1000));     // not aligned
    CHECK_FALSE(mem->discard(GuestAddress(0x2000), 0x800));      // not a whole page
    CHECK_FALSE(mem->discard(GuestAddress(0xf000), 0x2000));     // runs off the region
    CHECK_FALSE(mem->discard(GuestAddress(0x20000), 0x1000));    // in the hole
    CHECK_FALSE(mem->discard(GuestAddress(0xfffffffffffff000ull), 0x2000));  // wraps
    CHECK(mem->discard(GuestAddress(0x101000), 0x1000));
}
