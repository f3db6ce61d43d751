// BouncePool: the aligned host memory one virtio-blk queue copies misaligned O_DIRECT
// transfers through, and the whole of it: a fixed number of 64 KiB chunks in one anonymous
// mapping, made on first use and kept until the pool is destroyed. A transfer leases a run
// of adjacent chunks (one buffer, so one iovec and IORING_OP_READ/WRITE) and gives it back
// when its I/O has completed. When no run is free, acquire() says so and the caller waits
// for a release; it never allocates more. The device sizes the pool to hold its largest
// request (virtio_blk.hpp, "Host memory budget"), so an idle pool satisfies any request and
// waiting always ends.
//
// Not thread-safe: one per queue, used under the queue's lock.
#pragma once

#include <bit>
#include <cstdint>
#include <optional>
#include <span>

#include "vmm/base/error.hpp"
#include "vmm/base/mapping.hpp"

namespace kestrel {

class BouncePool {
public:
    // 64 KiB: a multiple of every O_DIRECT alignment (512 B logical blocks up to 64 KiB
    // pages), and 64 of them (one bitmap word) hold a maximal request of the default
    // configuration (254 segments x 16 KiB, just under 4 MiB).
    static constexpr uint64_t kChunkBytes = 64 << 10;
    static constexpr unsigned kMaxChunks = 64;
    static constexpr uint64_t kMaxBytes = kChunkBytes * kMaxChunks;

    struct Lease {
        uint8_t first = 0;
        uint8_t count = 0;  // chunks; 0 = no lease
    };

    // capacity_bytes is rounded up to whole chunks; at most kMaxBytes.
    explicit BouncePool(uint64_t capacity_bytes);

    // A run of chunks covering `len` bytes (1..capacity()), or nullopt when no such run is
    // free now. An error when len is out of range (a caller bug) or the mapping fails.
    Result<std::optional<Lease>> acquire(uint64_t len);
    void release(Lease lease);
    // The leased bytes: [0, len) of the run, 4 KiB-aligned.
    std::span<uint8_t> bytes(Lease lease, uint64_t len) const;

    uint64_t capacity() const { return uint64_t{chunks_} * kChunkBytes; }
    uint64_t mapped_bytes() const { return map_.size(); }
    uint64_t in_use_bytes() const { return uint64_t(std::popcount(used_)) * kChunkBytes; }
    uint64_t peak_bytes() const { return peak_; }

private:
    unsigned chunks_;
    uint64_t used_ = 0;  // bit i: chunk i leased
    uint64_t peak_ = 0;
    Mapping map_;        // empty until the first acquire
};

}  // namespace kestrel
