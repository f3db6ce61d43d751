// The ACPI tables of a kestrel x86-64 VM (ACPI 6.5): RSDP -> XSDT -> {FADT -> DSDT, MADT, and
// MCFG when the VM has PCI}, for a HW-reduced platform (no FACS needed). Pure functions over
// GuestMemory; no KVM.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "boot/acpi/acpi_config.hpp"
#include "vmm/base/error.hpp"
#include "vmm/memory/guest_memory.hpp"

namespace kestrel::acpi {

// Each table starts at this alignment after the previous one; the RSDP needs 16 (§5.2.5.1).
// Placement order: RSDP, XSDT, FACP, APIC, DSDT, then MCFG if cfg.pci is set.
inline constexpr uint64_t kAcpiTableAlign = 16;

// One table: its name and bytes. The name is the 4-character signature ("XSDT", "FACP",
// "APIC", "DSDT", "MCFG"), or "RSDP" for the root pointer (whose real signature is "RSD PTR ").
using AcpiBlob = std::pair<std::string, std::vector<uint8_t>>;

// Checks cfg: 1 <= num_cpus <= 254; with pci, a non-empty bus range, a 1 MiB-aligned ECAM
// and a non-empty 32-bit MMIO window, both ending at or below 4 GiB, apart from each other and
// from the IOAPIC/local APIC pages.
Result<void> validate(const AcpiConfig& cfg);

// Every table, in placement order, RSDP first; with the addresses inside them (XSDT entries,
// X_DSDT, RSDP's XSDT pointer) computed for placement at `base` by acpi_table_addresses.
// Empty if cfg is invalid (write_acpi_tables reports why).
std::vector<AcpiBlob> build_acpi_tables(const AcpiConfig& cfg, uint64_t base);
Result<std::vector<AcpiBlob>> try_build_acpi_tables(const AcpiConfig& cfg, uint64_t base);

// Where each blob goes: blob 0 at `base`, every later one at the next kAcpiTableAlign boundary
// after the end of its predecessor. One more entry at the end: the end of the last blob.
std::vector<uint64_t> acpi_table_addresses(uint64_t base, const std::vector<AcpiBlob>& blobs);

// Builds the tables and writes them between x86::kAcpiStart and x86::kAcpiEnd (zeroing the
// rest of that window so no stale RSDP can be found), RSDP at x86::kAcpiStart, inside the BIOS
// area OSPM scans. Returns the RSDP address. Fails on a bad cfg, tables that do not fit, or
// guest memory that does not cover the window.
Result<GuestAddress> write_acpi_tables(GuestMemory& mem, const AcpiConfig& cfg);

}  // namespace kestrel::acpi
