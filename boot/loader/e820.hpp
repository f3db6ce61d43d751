// The guest's physical memory map as the BIOS e820 call would report it, derived from the
// RAM regions kestrel gives the guest. One pure function shared by the Linux zero page and
// the PVH start info, so both boot paths describe the same machine.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "vmm/memory/guest_memory.hpp"

namespace kestrel::boot {

// ACPI 6.5 §15.1 "INT 15H, E820H - Query System Address Map", Table 15.1 (address range types).
enum class E820Type : uint32_t {
    Ram = 1,
    Reserved = 2,
};

struct E820Entry {
    uint64_t addr;
    uint64_t size;
    E820Type type;
    bool operator==(const E820Entry&) const = default;
};

// Entries sorted by address and non-overlapping:
//   RAM below x86::kEbdaStart, reserved [kEbdaStart, 1 MiB) (EBDA, ACPI tables, BIOS area,
//   which the kernel must not reuse), every part of `ram` at or above 1 MiB as RAM, and the
//   PCIe ECAM window reserved.
std::vector<E820Entry> build_e820_map(std::span<const GuestRegionSpec> ram);

// The RAM regions of `mem` in the form build_e820_map() takes.
std::vector<GuestRegionSpec> ram_regions(const GuestMemory& mem);

}  // namespace kestrel::boot
