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

}  // namespace

Result<std::vector<uint8_t>> build_dsdt_aml(const AcpiConfig&) {
    Bytes s5 = TRY(s5_object());
    Bytes com1 = TRY(com1_device());
    Bytes sb = TRY(aml::scope("\\_SB", com1));
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
