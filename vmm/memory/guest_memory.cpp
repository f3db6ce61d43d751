#include "vmm/memory/guest_memory.hpp"

#include <algorithm>

namespace kestrel {

namespace {
constexpr uint64_t kPage = 4096;
}

Result<GuestMemory> GuestMemory::create(std::span<const GuestRegionSpec> specs) {
    std::vector<GuestRegionSpec> sorted(specs.begin(), specs.end());
    std::sort(sorted.begin(), sorted.end(),
              [](auto& a, auto& b) { return a.start.raw < b.start.raw; });
    std::vector<GuestRegion> regions;
    uint64_t prev_end = 0;
    for (const auto& s : sorted) {
        if (s.size == 0 || s.size % kPage || s.start.raw % kPage)
            return fail("guest memory region {:#x}+{:#x} is empty or not page-aligned",
                        s.start.raw, s.size);
        auto end = s.start.checked_add(s.size);
        if (!end) return fail("guest memory region {:#x}+{:#x} overflows", s.start.raw, s.size);
        if (!regions.empty() && s.start.raw < prev_end)
            return fail("guest memory regions overlap at {:#x}", s.start.raw);
        auto map = Mapping::anonymous(s.size);
        if (!map) return std::unexpected(context(map.error(), "allocating guest memory"));
        regions.emplace_back(s.start, std::move(*map));
        prev_end = end->raw;
    }
    return GuestMemory(std::move(regions));
}

uint64_t GuestMemory::total_size() const {
    uint64_t t = 0;
    for (auto& r : regions_) t += r.size();
    return t;
}

GuestAddress GuestMemory::end() const {
    return regions_.empty() ? GuestAddress(0)
                            : GuestAddress(regions_.back().start().raw + regions_.back().size());
}

const GuestRegion* GuestMemory::find(GuestAddress addr, uint64_t len) const {
    for (auto& r : regions_)
        if (r.contains(addr, len)) return &r;
    return nullptr;
}

Result<std::span<const uint8_t>> GuestMemory::slice(GuestAddress addr, uint64_t len) const {
    const GuestRegion* r = find(addr, len);
    if (!r) return fail("guest range {:#x}+{:#x} is outside guest RAM", addr.raw, len);
    return std::span<const uint8_t>(r->host_base() + (addr.raw - r->start().raw), len);
}

Result<std::span<uint8_t>> GuestMemory::slice_mut(GuestAddress addr, uint64_t len) {
    const GuestRegion* r = find(addr, len);
    if (!r) return fail("guest range {:#x}+{:#x} is outside guest RAM", addr.raw, len);
    uint64_t off = addr.raw - r->start().raw;
    r->dirty().mark(off, len);
    return std::span<uint8_t>(r->host_base() + off, len);
}

Result<void> GuestMemory::read(GuestAddress addr, std::span<uint8_t> out) const {
    auto s = TRY(slice(addr, out.size()));
    std::memcpy(out.data(), s.data(), out.size());
    return {};
}

Result<void> GuestMemory::write(GuestAddress addr, std::span<const uint8_t> in) {
    auto s = TRY(slice_mut(addr, in.size()));
    std::memcpy(s.data(), in.data(), in.size());
    return {};
}

Result<void> GuestMemory::fill(GuestAddress addr, uint64_t len, uint8_t value) {
    auto s = TRY(slice_mut(addr, len));
    std::memset(s.data(), value, len);
    return {};
}

void GuestMemory::track_dirty(bool on) {
    for (auto& r : regions_) r.dirty().enable(on);
}

}  // namespace kestrel
