// What the ACPI tables describe about a VM: its vCPUs and, when the VM has one, its PCI host
// bridge (MCFG plus \_SB.PCI0 and the ECAM reservation in the DSDT).
#pragma once

#include <cstdint>
#include <optional>

namespace kestrel::acpi {

// One PCI segment (0) behind one host bridge, configured through ECAM (PCIe Base 6.0 §7.2.2).
struct PciHostConfig {
    // The ECAM address of bus 0 of the segment, as MCFG states it (PCI Firmware 3.3 §4.1.2):
    // bus B's 1 MiB of configuration space is at ecam_base + (B << 20), so the decoded range is
    // [ecam_base + (bus_start << 20), ecam_base + ((bus_end + 1) << 20)).
    uint64_t ecam_base = 0;
    uint8_t bus_start = 0;
    uint8_t bus_end = 0;
    // The window the guest assigns 32-bit memory BARs from; must lie below 4 GiB.
    uint64_t mmio32_base = 0;
    uint64_t mmio32_size = 0;
};

struct AcpiConfig {
    uint32_t num_cpus = 1;  // 1..254; APIC ids and ACPI processor UIDs 0..num_cpus-1
    // Absent: no MCFG, no PCI0 (legacy devices only).
    std::optional<PciHostConfig> pci = std::nullopt;
    // The platform has a dual 8259 (MADT PCAT_COMPAT): only with KVM's in-kernel PIC.
    bool has_8259 = false;
};

}  // namespace kestrel::acpi
