// Pieces shared by every ACPI system description table: the common header (ACPI 6.5 §5.2.6),
// the Generic Address Structure (§5.2.3.2), kestrel's OEM identity and the checksum rule.
#pragma once

#include <bit>
#include <cstdint>
#include <cstring>
#include <span>
#include <string_view>
#include <type_traits>
#include <vector>

#include "vmm/base/error.hpp"

namespace kestrel::acpi {

// ACPI tables are little-endian; the structs below are laid out in host order.
static_assert(std::endian::native == std::endian::little);

// §5.2.6 System Description Table Header.
struct [[gnu::packed]] SdtHeader {
    char signature[4];          // 0
    uint32_t length;            // 4: whole table, header included
    uint8_t revision;           // 8
    uint8_t checksum;           // 9: whole table sums to 0 mod 256
    char oem_id[6];             // 10
    char oem_table_id[8];       // 16
    uint32_t oem_revision;      // 24
    char creator_id[4];         // 28
    uint32_t creator_revision;  // 32
};
static_assert(sizeof(SdtHeader) == 36);

// §5.2.3.2 Generic Address Structure.
struct [[gnu::packed]] Gas {
    uint8_t address_space_id;     // 0: 1 = System I/O
    uint8_t register_bit_width;   // 1
    uint8_t register_bit_offset;  // 2
    uint8_t access_size;          // 3: 1 = byte access
    uint64_t address;             // 4
};
static_assert(sizeof(Gas) == 12);

inline constexpr uint8_t kGasSystemIo = 1;
inline constexpr uint8_t kGasAccessByte = 1;

// An 8-bit register in port I/O space.
constexpr Gas io_port_register8(uint16_t port) {
    return Gas{kGasSystemIo, 8, 0, kGasAccessByte, port};
}

inline constexpr std::string_view kOemId = "KESTRL";         // 6 bytes
inline constexpr std::string_view kOemTableId = "KESTREL ";  // 8 bytes
inline constexpr uint32_t kOemRevision = 1;
inline constexpr std::string_view kCreatorId = "KSTL";       // 4 bytes
inline constexpr uint32_t kCreatorRevision = 1;

// The value that makes `bytes` sum to 0 mod 256 when stored in one of them that is now zero.
uint8_t checksum_of(std::span<const uint8_t> bytes);

// A header with signature, revision and kestrel's OEM/creator fields; length and checksum
// are filled in by seal_table once the table is complete.
SdtHeader make_header(std::string_view signature, uint8_t revision);

// Sets the header's length to table.size() and its checksum so the table sums to 0.
Result<void> seal_table(std::span<uint8_t> table);

template <class T>
    requires std::is_trivially_copyable_v<T>
void append_struct(std::vector<uint8_t>& out, const T& v) {
    const size_t at = out.size();
    out.resize(at + sizeof v);
    std::memcpy(out.data() + at, &v, sizeof v);
}

}  // namespace kestrel::acpi
