// Where an initrd goes: page-aligned, as high as possible inside one RAM region, above the
// kernel and below a limit (4 GiB for PVH/ELF, initrd_addr_max for bzImage). High, because
// the kernel's early allocator grows up from the kernel image and must not run into it.
#pragma once

#include <cstdint>
#include <optional>
#include <span>

#include "vmm/memory/guest_memory.hpp"

namespace kestrel::boot {

// Start of [start, start+size) with start page-aligned, start >= lowest, start+size <= limit
// and the range inside one of `ram`; nullopt when nothing fits. size 0 never fits.
std::optional<GuestAddress> place_initrd(std::span<const GuestRegionSpec> ram, uint64_t size,
                                         uint64_t lowest, uint64_t limit);

}  // namespace kestrel::boot
