// Kernel loading for direct boot: takes a kernel image (ELF vmlinux, with or without a Xen PVH
// note, or a bzImage), an optional initrd and a command line, places them in guest memory with
// the boot information the kernel expects, and says how to enter it. Pure function over
// GuestMemory; the vCPU set-up (registers, page tables, GDT) is the caller's.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <utility>

#include "vmm/base/error.hpp"
#include "vmm/memory/guest_memory.hpp"

namespace kestrel::boot {

enum class EntryMode {
    Linux64,  // Linux boot protocol 64-bit entry: long mode, RSI = zero page
    Pvh32,    // Xen PVH: 32-bit protected mode, paging off, EBX = hvm_start_info
};

struct BootInputs {
    std::span<const uint8_t> kernel;  // whole file: ELF vmlinux or bzImage
    std::span<const uint8_t> initrd;  // empty = none
    std::string cmdline;
    GuestAddress rsdp;  // ACPI RSDP address (0 = none)
};

struct BootEntry {
    EntryMode mode;
    GuestAddress entry;       // 64-bit entry RIP (Linux64) or 32-bit PVH entry EIP (Pvh32)
    GuestAddress boot_info;   // zero page (RSI for Linux64) or hvm_start_info (EBX for Pvh32)
    GuestAddress kernel_end;  // highest byte the kernel image occupies + 1
    std::optional<std::pair<GuestAddress, uint64_t>> initrd;  // where the initrd went
};

// On error nothing has been written to `mem`: every range is validated first.
Result<BootEntry> prepare_boot(GuestMemory& mem, const BootInputs& in);

}  // namespace kestrel::boot
