#include "boot/loader/e820.hpp"

#include <algorithm>

#include "boot/x86_layout.hpp"

namespace kestrel::boot {

namespace {

// RAM ranges clipped to [lo, hi); a region wrapping past 2^64 is cut at the top.
void append_ram_within(std::span<const GuestRegionSpec> ram, uint64_t lo, uint64_t hi,
                       std::vector<E820Entry>& out) {
    for (const auto& r : ram) {
        uint64_t start = std::max(r.start.raw, lo);
        uint64_t region_end;
        if (__builtin_add_overflow(r.start.raw, r.size, &region_end)) region_end = UINT64_MAX;
        uint64_t end = std::min(region_end, hi);
        if (start < end) out.push_back({start, end - start, E820Type::Ram});
    }
}

}  // namespace

std::vector<E820Entry> build_e820_map(std::span<const GuestRegionSpec> ram) {
    std::vector<GuestRegionSpec> sorted(ram.begin(), ram.end());
    std::sort(sorted.begin(), sorted.end(),
              [](const auto& a, const auto& b) { return a.start.raw < b.start.raw; });
    std::vector<E820Entry> map;
    append_ram_within(sorted, 0, x86::kEbdaStart, map);
    map.push_back({x86::kEbdaStart, x86::kHighMemStart - x86::kEbdaStart, E820Type::Reserved});
    append_ram_within(sorted, x86::kHighMemStart, UINT64_MAX, map);
    // The PCIe ECAM window must be reserved in the firmware memory map for Linux to use it
    // at boot (PCI Firmware Spec 3.3 §4.1.2; Linux pci_mmcfg_reserved checks e820 first).
    // It lies in the MMIO hole, never over RAM. The 32-bit BAR window is deliberately not
    // listed: Linux trims e820-reserved ranges out of host-bridge windows.
    map.push_back({x86::kPciEcamStart, x86::kPciEcamSize, E820Type::Reserved});
    std::sort(map.begin(), map.end(), [](const E820Entry& a, const E820Entry& b) { return a.addr < b.addr; });
    return map;
}

std::vector<GuestRegionSpec> ram_regions(const GuestMemory& mem) {
    std::vector<GuestRegionSpec> out;
    for (const auto& r : mem.regions()) out.push_back({r.start(), r.size()});
    return out;
}

}  // namespace kestrel::boot
