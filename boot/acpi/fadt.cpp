#include "boot/acpi/fadt.hpp"

#include <cstring>

#include "boot/x86_layout.hpp"

namespace kestrel::acpi {

Result<std::vector<uint8_t>> build_fadt(uint64_t dsdt_address) {
    Fadt f{};
    f.header = make_header("FACP", kFadtRevision);
    f.fadt_minor_version = kFadtMinorVersion;
    // WBINVD works on every x86-64 vCPU. The button bits say "no fixed-feature buttons": a
    // HW-reduced platform has no fixed hardware (§4.1); a control-method button can come later.
    f.flags = kFadtWbinvd | kFadtPwrButton | kFadtSlpButton | kFadtResetRegSup | kFadtHwReducedAcpi;
    // No VGA. MSI stays allowed (bit 3 clear) for the PCI devices. The 8042 bit says the
    // keyboard controller at 0x60/0x64 exists (§5.2.9.3). Linux does not need it: it finds the
    // controller as \_SB.KBD (PNP0303) and reads the bit only when PNP finds none
    // (acpi_parse_fadt: clear means X86_LEGACY_I8042_FIRMWARE_ABSENT, which stops the direct
    // probe); it is set so the tables agree with each other. CMOS RTC Not Present stays clear
    // as well: the RTC at 0x70 exists (also as \_SB.RTC).
    f.iapc_boot_arch = kBootArchVgaNotPresent | kBootArch8042;
    // Not fixed hardware, so it still counts under HW-reduced ACPI; no day/month alarm bytes.
    f.century = kCmosCenturyIndex;
    // The 32-bit DSDT field stays 0 so OSPM has one unambiguous pointer (§5.2.9: X_DSDT wins).
    f.x_dsdt = dsdt_address;

    // §4.8.3.6: OSPM resets the platform by writing RESET_VALUE to RESET_REG.
    f.reset_reg = io_port_register8(x86::kAcpiResetPort);
    f.reset_value = x86::kAcpiResetValue;
    // §4.8.3.7: 8-bit registers, bit width 8 and bit offset 0 as §5.2.9 requires for them.
    f.sleep_control_reg = io_port_register8(x86::kAcpiSleepControlPort);
    f.sleep_status_reg = io_port_register8(x86::kAcpiSleepStatusPort);

    // Vendor-chosen; all 8 bytes count, so the NUL is part of it.
    constexpr char kVendor[8] = {'K', 'E', 'S', 'T', 'R', 'E', 'L', '\0'};
    std::memcpy(&f.hypervisor_vendor_id, kVendor, sizeof kVendor);

    std::vector<uint8_t> out;
    append_struct(out, f);
    TRY(seal_table(out));
    return out;
}

}  // namespace kestrel::acpi
