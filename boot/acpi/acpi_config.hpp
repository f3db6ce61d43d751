// What the ACPI tables describe about a VM. Grows with the machine (the PCI host bridge will
// add its ECAM window for the MCFG and PCI0 in the DSDT).
#pragma once

#include <cstdint>

namespace kestrel::acpi {

struct AcpiConfig {
    uint32_t num_cpus = 1;  // 1..254; APIC ids and ACPI processor UIDs 0..num_cpus-1
};

}  // namespace kestrel::acpi
