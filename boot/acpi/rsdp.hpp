// Root System Description Pointer (ACPI 6.5 §5.2.5.3), revision 2: how the guest finds the XSDT.
// x86 OSPM finds it by scanning 16-byte boundaries of 0xE0000..0xFFFFF (§5.2.5.1).
#pragma once

#include <cstdint>
#include <vector>

namespace kestrel::acpi {

// §5.2.5.3 RSDP structure.
struct [[gnu::packed]] Rsdp {
    char signature[8];          // 0: "RSD PTR "
    uint8_t checksum;           // 8: first 20 bytes sum to 0
    char oem_id[6];             // 9
    uint8_t revision;           // 15: 2 = ACPI 2.0+ (has XSDT)
    uint32_t rsdt_address;      // 16: 0, we provide only the XSDT
    uint32_t length;            // 20: whole structure
    uint64_t xsdt_address;      // 24
    uint8_t extended_checksum;  // 32: all 36 bytes sum to 0
    uint8_t reserved[3];        // 33
};
static_assert(sizeof(Rsdp) == 36);

inline constexpr uint64_t kRsdpAlignment = 16;

std::vector<uint8_t> build_rsdp(uint64_t xsdt_address);

}  // namespace kestrel::acpi
