// PCI Express memory-mapped configuration space base address description table, "MCFG"
// (PCI Firmware Specification 3.3 §4.1.2): where each segment's ECAM window lives.
#pragma once

#include <cstdint>
#include <vector>

#include "boot/acpi/acpi_config.hpp"
#include "boot/acpi/sdt.hpp"
#include "vmm/base/error.hpp"

namespace kestrel::acpi {

// PCI Firmware 3.3 Table 4-2, MCFG header: the common header and 8 reserved bytes.
struct [[gnu::packed]] McfgFixed {
    SdtHeader header;   // 0: "MCFG"
    uint64_t reserved;  // 36
};
static_assert(sizeof(McfgFixed) == 44);

// PCI Firmware 3.3 Table 4-3, Configuration Space Base Address Allocation Structure.
struct [[gnu::packed]] McfgAllocation {
    uint64_t base_address;     // 0: ECAM address of bus 0 of the segment (even if start_bus > 0)
    uint16_t segment;          // 8: PCI segment group, matches the host bridge's _SEG
    uint8_t start_bus;         // 10
    uint8_t end_bus;           // 11
    uint32_t reserved;         // 12
};
static_assert(sizeof(McfgAllocation) == 16);

inline constexpr uint8_t kMcfgRevision = 1;

// One allocation for segment 0, buses pci.bus_start..pci.bus_end. Expects a validated config.
Result<std::vector<uint8_t>> build_mcfg(const PciHostConfig& pci);

}  // namespace kestrel::acpi
