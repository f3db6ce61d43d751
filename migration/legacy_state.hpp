// The legacy devices' state in the state stream (migration/state_stream.hpp): one section per
// device, its payload the device's State struct field by field in declaration order.
// The devices own what their state means and check it in restore(); this file owns only
// the bytes: it refuses a payload that is short, long, of another version, or whose
// lengths exceed the device's bounds, before anything is sized by them.
//
// Payload version 1 of every section (all integers little-endian, bools one byte 0/1,
// "list" = u32 count then that many bytes):
//   uart/com1  ier lcr mcr fcr lsr_errors msr_deltas scr dll dlm (u8 each), thre_pending,
//              rx_fifo list (<= 64), rx_backlog list (<= 4096)
//   rtc        index u8, ram 128 bytes
//   i8042      command_byte output_port u8, has_answer, answer u8, answer_from_aux,
//              keyboard list (<= 16), last_output u8, has_pending_cmd, pending_cmd u8,
//              has_pending_kbd, pending_kbd u8, last_write_was_command, scanning
//   acpi-pm    wake_status
//   ioapic     select u8, id u32, 24 x redirection u64, 24 x level, 24 x irr
#pragma once

#include "devices/legacy/acpi_pm.hpp"
#include "devices/legacy/cmos_rtc.hpp"
#include "devices/legacy/i8042.hpp"
#include "devices/legacy/ioapic.hpp"
#include "devices/legacy/uart16550.hpp"
#include "migration/state_stream.hpp"
#include "vmm/base/error.hpp"

namespace kestrel::migration {

inline constexpr uint32_t kLegacyStateVersion = 1;
inline constexpr const char* kUartSection = "uart/com1";
inline constexpr const char* kRtcSection = "rtc";
inline constexpr const char* kI8042Section = "i8042";
inline constexpr const char* kAcpiPmSection = "acpi-pm";
inline constexpr const char* kIoapicSection = "ioapic";

void encode(Encoder& e, const Uart16550::State& s);
void encode(Encoder& e, const CmosRtc::State& s);
void encode(Encoder& e, const I8042::State& s);
void encode(Encoder& e, const AcpiPmDevice::State& s);
void encode(Encoder& e, const IoApic::State& s);

// Each refuses a section whose version is not kLegacyStateVersion, and any byte left over.
Result<Uart16550::State> decode_uart(const Section& s);
Result<CmosRtc::State> decode_rtc(const Section& s);
Result<I8042::State> decode_i8042(const Section& s);
Result<AcpiPmDevice::State> decode_acpi_pm(const Section& s);
Result<IoApic::State> decode_ioapic(const Section& s);

}  // namespace kestrel::migration
