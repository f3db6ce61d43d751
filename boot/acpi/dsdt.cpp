#include "boot/acpi/dsdt.hpp"

#include "boot/acpi/aml.hpp"
#include "boot/acpi/resource_template.hpp"
#include "boot/acpi/sdt.hpp"
#include "boot/x86_layout.hpp"

namespace kestrel::acpi {
namespace {

using aml::Bytes;

// Name(_S5_, Package(){SLP_TYPa, SLP_TYPb, 0, 0}) (§7.4.2). Under HW-reduced ACPI, OSPM writes
// SLP_TYPa into bits 4:2 of SLEEP_CONTROL_REG together with SLP_EN (bit 5) (§4.8.3.7), so Linux
// powers off with (kAcpiS5SleepType << 2) | 0x20 to kAcpiSleepControlPort. The two reserved
// elements keep the classic 4-element shape other OSes and iasl expect.
Result<Bytes> s5_object() {
    const Bytes elements[] = {aml::integer(x86::kAcpiS5SleepType),
                              aml::integer(x86::kAcpiS5SleepType), aml::integer(0),
                              aml::integer(0)};
    Bytes package = TRY(aml::package(elements));
    return aml::name("_S5_", package);
}

// Device(COM1){ Name(_HID, EisaId("PNP0501")) Name(_UID, 1)
//   Name(_CRS, ResourceTemplate(){ IO(Decode16, 0x3F8, 0x3F8, 0, 8) IRQNoFlags(){4} }) }
// PNP0501 is the 16550A-compatible UART id (§6.1.5 _HID uses PNP ids).
Result<Bytes> com1_device() {
    constexpr uint8_t kUartRegisters = 8;
    const Bytes resources[] = {
        aml::io_port_decode16(x86::kCom1Port, x86::kCom1Port, 0, kUartRegisters),
        aml::irq_no_flags(static_cast<uint16_t>(1u << x86::kCom1Irq)),
    };
    Bytes uart_id = TRY(aml::eisa_id("PNP0501"));
    Bytes template_buffer = TRY(aml::resource_template(resources));
    Bytes hid = TRY(aml::name("_HID", uart_id));
    Bytes uid = TRY(aml::name("_UID", aml::integer(1)));
    Bytes crs = TRY(aml::name("_CRS", template_buffer));
    return aml::device("COM1", aml::concat({hid, uid, crs}));
}

// Device(KBD){ Name(_HID, EisaId("PNP0303"))
//   Name(_CRS, ResourceTemplate(){ IO(Decode16, 0x60, 0x60, 1, 1) IO(Decode16, 0x64, 0x64, 1, 1)
//                                  IRQNoFlags(){1} }) }
// PNP0303 is the IBM enhanced (101/102-key, PS/2) keyboard controller. Linux's i8042 driver
// looks for it through PNPACPI (drivers/input/serio/i8042-acpipnpio.h, i8042_pnp_init): found,
// it takes the data and command ports from the two IO descriptors in that order and the IRQ
// from the IRQ descriptor, and probes the controller; not found, it gives up ("PNP: No PS/2
// controller found") unless the guest was booted with i8042.nopnp. No PNP0F13 (PS/2 mouse):
// the controller has no AUX port (devices/legacy/i8042.hpp).
Result<Bytes> keyboard_device() {
    const Bytes resources[] = {
        aml::io_port_decode16(x86::kI8042DataPort, x86::kI8042DataPort, 1, 1),
        aml::io_port_decode16(x86::kI8042DataPort + 4, x86::kI8042DataPort + 4, 1, 1),
        aml::irq_no_flags(static_cast<uint16_t>(1u << x86::kI8042KbdIrq)),
    };
    Bytes kbd_id = TRY(aml::eisa_id("PNP0303"));
    Bytes template_buffer = TRY(aml::resource_template(resources));
    Bytes hid = TRY(aml::name("_HID", kbd_id));
    Bytes crs = TRY(aml::name("_CRS", template_buffer));
    return aml::device("KBD", aml::concat({hid, crs}));
}

// Device(RTC){ Name(_HID, EisaId("PNP0B00"))
//   Name(_CRS, ResourceTemplate(){ IO(Decode16, 0x70, 0x70, 1, 2) }) }
// Under HW-reduced ACPI Linux installs no legacy PIC (arch/x86/kernel/acpi/boot.c,
// acpi_reduced_hw_init: legacy_pic = &null_legacy_pic), so the rtc_cmos platform device that
// arch/x86/kernel/rtc.c registers with a bare IRQ 8 fails to probe (-EINVAL). With a PNP0B00
// device present, add_rtc_cmos() registers no platform device at all, drivers/acpi/acpi_pnp.c
// lists PNP0B00 so PNPACPI creates a pnp device for it, and rtc-cmos's cmos_pnp_probe, finding
// port 0x70 and no IRQ (and no legacy IRQs), runs the RTC without one: the time reads work,
// alarms and update interrupts are reported as unsupported. No IRQ is declared because
// devices/legacy/cmos_rtc raises none; a declared IRQ that never fires would make readers
// that wait for an update interrupt hang.
Result<Bytes> rtc_device() {
    constexpr uint8_t kRtcRegisters = 2;  // index 0x70, data 0x71
    const Bytes resources[] = {
        aml::io_port_decode16(x86::kCmosPort, x86::kCmosPort, 1, kRtcRegisters),
    };
    Bytes rtc_id = TRY(aml::eisa_id("PNP0B00"));
    Bytes template_buffer = TRY(aml::resource_template(resources));
    Bytes hid = TRY(aml::name("_HID", rtc_id));
    Bytes crs = TRY(aml::name("_CRS", template_buffer));
    return aml::device("RTC", aml::concat({hid, crs}));
}

// Device(PCI0): the PCI Express host bridge of segment 0: _HID PNP0A08 (PCI Express root
// bridge) with _CID PNP0A03 (PCI root bridge) for OSPMs that know only PCI, as the PCI Firmware
// Specification 3.3 has PCIe host bridges declare themselves; Linux's pci_root driver binds
// either id.
//   _SEG 0, _BBN bus_start, _UID 0,
//   _CRS: WordBusNumber(bus_start..bus_end), WordIO 0x0000-0x0CF7 and 0x0D00-0xFFFF (all of
//   port space but the 0xCF8-0xCFF configuration mechanism #1 ports, which the bridge itself
//   claims), DWordMemory(NonCacheable, ReadWrite) over the 32-bit BAR window.
// The ECAM window is not a bridge window: it is listed by MCFG and reserved by \_SB.ECAM.
// No _PRT: the devices behind this bridge interrupt through MSI-X only, so there is no INTx
// routing to describe (Linux just logs "PCI INT A: not connected" for a device that reports an
// interrupt pin). No _OSC either: it is optional; without it Linux 6.1's negotiate_os_control
// (drivers/acpi/pci_root.c) logs "_OSC: platform retains control of PCIe features
// (AE_NOT_FOUND)" and leaves native hotplug/AER/PME/LTR and ASPM off, none of which a bus of
// root-complex integrated virtio devices uses; MSI/MSI-X are not negotiated through _OSC but
// allowed by the FADT (IAPC_BOOT_ARCH bit 3 clear). An _OSC that merely returns Arg3 would
// grant every requested control without checking the UUID, which is not "minimal and
// correct"; a correct one needs If/CreateDWordField/And in the encoder for no gain today.
Result<Bytes> pci0_device(const PciHostConfig& pci) {
    constexpr uint16_t kConfigPortsEnd = x86::kPciConfigPort + 8;  // 0xcf8..0xcff
    const uint64_t mmio32_last = pci.mmio32_base + pci.mmio32_size - 1;
    // Built one by one: TRY returns from inside a statement expression, which must not happen
    // halfway through an array's initialisation.
    Bytes buses = TRY(aml::word_bus_number(pci.bus_start, pci.bus_end));
    Bytes io_low = TRY(aml::word_io(0, x86::kPciConfigPort - 1));
    Bytes io_high = TRY(aml::word_io(kConfigPortsEnd, 0xffff));
    Bytes mmio32 = TRY(aml::dword_memory(aml::MemoryCaching::kNonCacheable, true,
                                         static_cast<uint32_t>(pci.mmio32_base),
                                         static_cast<uint32_t>(mmio32_last)));
    const Bytes resources[] = {buses, io_low, io_high, mmio32};
    Bytes bridge_id = TRY(aml::eisa_id("PNP0A08"));
    Bytes compatible_id = TRY(aml::eisa_id("PNP0A03"));
    Bytes template_buffer = TRY(aml::resource_template(resources));
    Bytes hid = TRY(aml::name("_HID", bridge_id));
    Bytes cid = TRY(aml::name("_CID", compatible_id));
    Bytes seg = TRY(aml::name("_SEG", aml::integer(0)));
    Bytes bbn = TRY(aml::name("_BBN", aml::integer(pci.bus_start)));
    Bytes uid = TRY(aml::name("_UID", aml::integer(0)));
    Bytes crs = TRY(aml::name("_CRS", template_buffer));
    return aml::device("PCI0", aml::concat({hid, cid, seg, bbn, uid, crs}));
}

// Device(ECAM){ Name(_HID, EisaId("PNP0C02")) Name(_CRS, ResourceTemplate(){
//   Memory32Fixed(ReadWrite, ecam of bus_start, (bus_end - bus_start + 1) MiB) }) }
// PCI Firmware 3.3 §4.1.2: the MCFG range must be reserved by a motherboard-resources
// (PNP0C02) device. Linux checks exactly that before it uses ECAM (arch/x86/pci/
// mmconfig-shared.c, pci_mmcfg_check_reserved -> is_acpi_reserved walks PNP0C01/PNP0C02 _CRS:
// "MMCONFIG at ... reserved as ACPI motherboard resource"); drivers/pnp/system.c then keeps
// the range out of the allocator.
Result<Bytes> ecam_reservation_device(const PciHostConfig& pci) {
    const uint64_t first = pci.ecam_base + (uint64_t{pci.bus_start} << 20);
    const uint64_t size = (uint64_t{pci.bus_end} - pci.bus_start + 1) << 20;
    if (first + size > (uint64_t{1} << 32))
        return fail("ECAM window [{:#x}, +{:#x}) must lie below 4 GiB", first, size);
    Bytes window = TRY(aml::memory32_fixed(true, static_cast<uint32_t>(first),
                                           static_cast<uint32_t>(size)));
    const Bytes resources[] = {window};
    Bytes motherboard_id = TRY(aml::eisa_id("PNP0C02"));
    Bytes template_buffer = TRY(aml::resource_template(resources));
    Bytes hid = TRY(aml::name("_HID", motherboard_id));
    Bytes crs = TRY(aml::name("_CRS", template_buffer));
    return aml::device("ECAM", aml::concat({hid, crs}));
}

}  // namespace

Result<std::vector<uint8_t>> build_dsdt_aml(const AcpiConfig& cfg) {
    Bytes s5 = TRY(s5_object());
    Bytes com1 = TRY(com1_device());
    Bytes rtc = TRY(rtc_device());
    Bytes kbd = TRY(keyboard_device());
    Bytes devices = aml::concat({com1, rtc, kbd});
    if (cfg.pci) {
        Bytes pci0 = TRY(pci0_device(*cfg.pci));
        Bytes ecam = TRY(ecam_reservation_device(*cfg.pci));
        devices = aml::concat({devices, pci0, ecam});
    }
    Bytes sb = TRY(aml::scope("\\_SB", devices));
    return aml::concat({s5, sb});
}

Result<std::vector<uint8_t>> build_dsdt(const AcpiConfig& cfg) {
    std::vector<uint8_t> out;
    append_struct(out, make_header("DSDT", kDsdtRevision));
    Bytes body = TRY(build_dsdt_aml(cfg));
    out.insert(out.end(), body.begin(), body.end());
    TRY(seal_table(out));
    return out;
}

}  // namespace kestrel::acpi
