#include "boot/loader/initrd_placement.hpp"

#include <algorithm>

namespace kestrel::boot {

namespace {
constexpr uint64_t kPage = 4096;
}

std::optional<GuestAddress> place_initrd(std::span<const GuestRegionSpec> ram, uint64_t size,
                                         uint64_t lowest, uint64_t limit) {
    if (size == 0) return std::nullopt;
    // Round lowest up to a page without wrapping.
    if (lowest > UINT64_MAX - (kPage - 1)) return std::nullopt;
    lowest = (lowest + kPage - 1) & ~(kPage - 1);
    std::optional<GuestAddress> best;
    for (const auto& r : ram) {
        uint64_t region_end;
        if (__builtin_add_overflow(r.start.raw, r.size, &region_end)) region_end = UINT64_MAX;
        uint64_t top = std::min(region_end, limit);
        uint64_t floor = std::max(r.start.raw, lowest);
        if (top < size) continue;
        uint64_t start = (top - size) & ~(kPage - 1);
        if (start < floor) continue;
        if (!best || start > best->raw) best = GuestAddress(start);
    }
    return best;
}

}  // namespace kestrel::boot
