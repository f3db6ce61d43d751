// Differentiated System Description Table (ACPI 6.5 §5.2.11.1): the AML namespace. Holds \_S5_
// so OSPM can power off through the FADT sleep control register; \_SB.COM1, \_SB.RTC and
// \_SB.KBD so the guest finds the UART, the CMOS RTC and the i8042 keyboard controller through
// ACPI (PNP) instead of legacy probing; and, when
// the VM has PCI, the host bridge \_SB.PCI0 plus \_SB.ECAM reserving its ECAM window.
#pragma once

#include <cstdint>
#include <vector>

#include "boot/acpi/acpi_config.hpp"
#include "vmm/base/error.hpp"

namespace kestrel::acpi {

// Revision 2 and above make AML integers 64-bit (§5.2.11.1).
inline constexpr uint8_t kDsdtRevision = 2;

// The AML after the header: what build_dsdt wraps, exposed for tests. Expects a validated cfg.
Result<std::vector<uint8_t>> build_dsdt_aml(const AcpiConfig& cfg);
Result<std::vector<uint8_t>> build_dsdt(const AcpiConfig& cfg);

}  // namespace kestrel::acpi
