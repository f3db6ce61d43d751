// Extended System Description Table (ACPI 6.5 §5.2.8): the 64-bit list of every other table's
// address except the DSDT (reached through the FADT) and the FACS.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "vmm/base/error.hpp"

namespace kestrel::acpi {

inline constexpr uint8_t kXsdtRevision = 1;

// 36-byte header followed by one unaligned 64-bit address per entry.
inline constexpr uint64_t xsdt_size(size_t entries) { return 36 + 8 * uint64_t{entries}; }

Result<std::vector<uint8_t>> build_xsdt(std::span<const uint64_t> table_addresses);

}  // namespace kestrel::acpi
