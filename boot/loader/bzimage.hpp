// Parsing of a Linux bzImage per the x86 boot protocol (Documentation/arch/x86/boot.rst):
// the setup header, the protected-mode kernel that follows the real-mode setup sectors, and
// where that kernel must be loaded for the 64-bit entry ("64-bit BOOT PROTOCOL").
#pragma once

#include <cstdint>
#include <span>

#include "boot/loader/boot_params.hpp"
#include "vmm/base/error.hpp"

namespace kestrel::boot {

inline constexpr uint16_t kMinBootProtocol = 0x020c;   // 2.12: xloadflags, XLF_KERNEL_64
inline constexpr uint16_t kAcpiRsdpProtocol = 0x020e;  // 2.14: boot_params.acpi_rsdp_addr
inline constexpr uint64_t kBzImage64EntryOffset = 0x200;  // boot.rst: startup_64 = load + 0x200

struct BzImage {
    SetupHeader header;                         // as found in the file
    std::span<const uint8_t> header_bytes;      // file [0x1f1, 0x202 + byte at 0x201)
    std::span<const uint8_t> protected_mode;    // the kernel proper, loaded at load_addr
    uint64_t load_addr;
    uint64_t load_span;                         // max(protected_mode size, init_size)
};

// Has the boot_flag and "HdrS" magic (the file may still be unusable).
bool looks_like_bzimage(std::span<const uint8_t> file);
Result<BzImage> parse_bzimage(std::span<const uint8_t> file);

}  // namespace kestrel::boot
