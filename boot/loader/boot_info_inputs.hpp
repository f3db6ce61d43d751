// What both boot-information builders (Linux zero page, PVH start info) describe: where the
// loader put the command line and initrd, the memory map, and the ACPI RSDP.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <utility>

#include "boot/loader/e820.hpp"
#include "vmm/memory/guest_address.hpp"

namespace kestrel::boot {

struct BootInfoInputs {
    GuestAddress cmdline;
    uint64_t cmdline_len;  // without the terminating NUL
    std::optional<std::pair<GuestAddress, uint64_t>> initrd;
    std::span<const E820Entry> memory_map;
    GuestAddress rsdp;  // 0 = none
};

}  // namespace kestrel::boot
