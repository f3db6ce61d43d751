#include "devices/virtio/blk/bounce_pool.hpp"

#include <algorithm>
#include <bit>

namespace kestrel {

BouncePool::BouncePool(uint64_t capacity_bytes)
    : chunks_(static_cast<unsigned>(
          std::clamp<uint64_t>((capacity_bytes + kChunkBytes - 1) / kChunkBytes, 1, kMaxChunks))) {}

Result<std::optional<BouncePool::Lease>> BouncePool::acquire(uint64_t len) {
    if (len == 0 || len > capacity())
        return fail("bounce pool: {} bytes asked of a {}-byte pool", len, capacity());
    if (map_.size() == 0) map_ = TRY(Mapping::anonymous(capacity()));
    auto need = static_cast<unsigned>((len + kChunkBytes - 1) / kChunkBytes);
    uint64_t run = need == 64 ? ~uint64_t{0} : (uint64_t{1} << need) - 1;
    // First fit: small leases gather at the bottom, which keeps long runs free at the top.
    for (unsigned first = 0; first + need <= chunks_; ++first) {
        if ((used_ & (run << first)) != 0) continue;
        used_ |= run << first;
        peak_ = std::max(peak_, in_use_bytes());
        return Lease{static_cast<uint8_t>(first), static_cast<uint8_t>(need)};
    }
    return std::nullopt;
}

void BouncePool::release(Lease lease) {
    if (lease.count == 0) return;
    uint64_t run = lease.count == 64 ? ~uint64_t{0} : (uint64_t{1} << lease.count) - 1;
    used_ &= ~(run << lease.first);
}

std::span<uint8_t> BouncePool::bytes(Lease lease, uint64_t len) const {
    return {map_.data() + lease.first * kChunkBytes, static_cast<size_t>(len)};
}

}  // namespace kestrel
