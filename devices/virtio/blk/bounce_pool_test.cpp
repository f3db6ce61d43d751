#include "devices/virtio/blk/bounce_pool.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <cstring>
#include <vector>

using namespace kestrel;

namespace {

BouncePool::Lease must(Result<std::optional<BouncePool::Lease>> r) {
    REQUIRE(r.has_value());
    REQUIRE(r->has_value());
    return **r;
}

}  // namespace

TEST_CASE("BouncePool: maps nothing until used, then exactly its capacity") {
    BouncePool pool(3 * BouncePool::kChunkBytes - 100);
    CHECK(pool.capacity() == 3 * BouncePool::kChunkBytes);
    CHECK(pool.mapped_bytes() == 0);
    auto l = must(pool.acquire(1));
    CHECK(pool.mapped_bytes() == pool.capacity());
    CHECK(reinterpret_cast<uintptr_t>(pool.bytes(l, 1).data()) % 4096 == 0);
    CHECK(BouncePool(1ull << 40).capacity() == BouncePool::kMaxBytes);
}

TEST_CASE("BouncePool: leases never overlap and never exceed the capacity; an idle pool takes any size") {
    BouncePool pool(BouncePool::kMaxBytes);
    // Fill with leases of 1..5 chunks until one does not fit; write a distinct byte through
    // each, then check that no lease's bytes were overwritten by another's.
    std::vector<std::pair<BouncePool::Lease, uint64_t>> held;
    for (uint64_t i = 0;; ++i) {
        uint64_t len = (i % 5 + 1) * BouncePool::kChunkBytes - 512;
        auto r = pool.acquire(len);
        REQUIRE(r.has_value());
        if (!*r) break;
        std::span<uint8_t> b = pool.bytes(**r, len);
        std::memset(b.data(), static_cast<int>(i + 1), b.size());
        held.emplace_back(**r, len);
        REQUIRE(pool.in_use_bytes() <= pool.capacity());
    }
    CHECK(held.size() >= 2);
    CHECK(pool.peak_bytes() <= pool.capacity());
    for (size_t i = 0; i < held.size(); ++i) {
        std::span<uint8_t> b = pool.bytes(held[i].first, held[i].second);
        CHECK(std::count(b.begin(), b.end(), static_cast<uint8_t>(i + 1)) == static_cast<long>(b.size()));
    }
    // Freeing every other lease leaves holes; a whole-pool request must wait until all go.
    for (size_t i = 0; i < held.size(); i += 2) pool.release(held[i].first);
    auto whole = pool.acquire(pool.capacity());
    REQUIRE(whole.has_value());
    CHECK_FALSE(whole->has_value());
    for (size_t i = 1; i < held.size(); i += 2) pool.release(held[i].first);
    CHECK(pool.in_use_bytes() == 0);
    auto all = must(pool.acquire(pool.capacity()));
    CHECK(all.count == BouncePool::kMaxChunks);
    CHECK(pool.in_use_bytes() == pool.capacity());
    CHECK_FALSE(pool.acquire(512)->has_value());
    pool.release(all);
    CHECK(must(pool.acquire(512)).first == 0);
}

TEST_CASE("BouncePool: out-of-range sizes are errors, not leases") {
    BouncePool pool(BouncePool::kChunkBytes);
    CHECK_FALSE(pool.acquire(0).has_value());
    CHECK_FALSE(pool.acquire(BouncePool::kChunkBytes + 1).has_value());
    CHECK(pool.in_use_bytes() == 0);
}
