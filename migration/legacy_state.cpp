#include "migration/legacy_state.hpp"

namespace kestrel::migration {

namespace {

void put_list(Encoder& e, const std::vector<uint8_t>& v) {
    e.put_u32(static_cast<uint32_t>(v.size()));
    e.put_bytes(v);
}

// The count is checked against `max` before anything is sized by it.
Result<std::vector<uint8_t>> get_list(Decoder& d, std::string_view field, size_t max) {
    uint32_t n = TRY(d.u32_max(field, static_cast<uint32_t>(max)));
    auto b = TRY(d.bytes(field, n));
    return std::vector<uint8_t>(b.begin(), b.end());
}

}  // namespace

void encode(Encoder& e, const Uart16550::State& s) {
    for (uint8_t r : {s.ier, s.lcr, s.mcr, s.fcr, s.lsr_errors, s.msr_deltas, s.scr, s.dll, s.dlm}) e.put_u8(r);
    e.put_bool(s.thre_pending);
    put_list(e, s.rx_fifo);
    put_list(e, s.rx_backlog);
}

Result<Uart16550::State> decode_uart(const Section& sec) {
    Decoder d = TRY(Decoder::of(sec, kLegacyStateVersion));
    Uart16550::State s;
    s.ier = TRY(d.u8("ier"));
    s.lcr = TRY(d.u8("lcr"));
    s.mcr = TRY(d.u8("mcr"));
    s.fcr = TRY(d.u8("fcr"));
    s.lsr_errors = TRY(d.u8("lsr_errors"));
    s.msr_deltas = TRY(d.u8("msr_deltas"));
    s.scr = TRY(d.u8("scr"));
    s.dll = TRY(d.u8("dll"));
    s.dlm = TRY(d.u8("dlm"));
    s.thre_pending = TRY(d.boolean("thre_pending"));
    s.rx_fifo = TRY(get_list(d, "rx_fifo", Uart16550::kRxFifoSize));
    s.rx_backlog = TRY(get_list(d, "rx_backlog", Uart16550::kRxBacklogCapacity));
    TRY(d.finish());
    return s;
}

void encode(Encoder& e, const CmosRtc::State& s) {
    e.put_u8(s.index);
    e.put_bytes(s.ram);
}

Result<CmosRtc::State> decode_rtc(const Section& sec) {
    Decoder d = TRY(Decoder::of(sec, kLegacyStateVersion));
    CmosRtc::State s;
    s.index = TRY(d.u8("index"));
    auto ram = TRY(d.bytes("ram", s.ram.size()));
    std::copy(ram.begin(), ram.end(), s.ram.begin());
    TRY(d.finish());
    return s;
}

void encode(Encoder& e, const I8042::State& s) {
    e.put_u8(s.command_byte);
    e.put_u8(s.output_port);
    e.put_bool(s.has_answer);
    e.put_u8(s.answer);
    e.put_bool(s.answer_from_aux);
    put_list(e, s.keyboard);
    e.put_u8(s.last_output);
    e.put_bool(s.has_pending_cmd);
    e.put_u8(s.pending_cmd);
    e.put_bool(s.has_pending_kbd);
    e.put_u8(s.pending_kbd);
    e.put_bool(s.last_write_was_command);
    e.put_bool(s.scanning);
}

Result<I8042::State> decode_i8042(const Section& sec) {
    Decoder d = TRY(Decoder::of(sec, kLegacyStateVersion));
    I8042::State s;
    s.command_byte = TRY(d.u8("command_byte"));
    s.output_port = TRY(d.u8("output_port"));
    s.has_answer = TRY(d.boolean("has_answer"));
    s.answer = TRY(d.u8("answer"));
    s.answer_from_aux = TRY(d.boolean("answer_from_aux"));
    s.keyboard = TRY(get_list(d, "keyboard", I8042::kKeyboardBuffer));
    s.last_output = TRY(d.u8("last_output"));
    s.has_pending_cmd = TRY(d.boolean("has_pending_cmd"));
    s.pending_cmd = TRY(d.u8("pending_cmd"));
    s.has_pending_kbd = TRY(d.boolean("has_pending_kbd"));
    s.pending_kbd = TRY(d.u8("pending_kbd"));
    s.last_write_was_command = TRY(d.boolean("last_write_was_command"));
    s.scanning = TRY(d.boolean("scanning"));
    TRY(d.finish());
    return s;
}

void encode(Encoder& e, const AcpiPmDevice::State& s) { e.put_bool(s.wake_status); }

Result<AcpiPmDevice::State> decode_acpi_pm(const Section& sec) {
    Decoder d = TRY(Decoder::of(sec, kLegacyStateVersion));
    AcpiPmDevice::State s;
    s.wake_status = TRY(d.boolean("wake_status"));
    TRY(d.finish());
    return s;
}

void encode(Encoder& e, const IoApic::State& s) {
    e.put_u8(s.select);
    e.put_u32(s.id);
    for (uint64_t r : s.redirection) e.put_u64(r);
    for (bool b : s.level) e.put_bool(b);
    for (bool b : s.irr) e.put_bool(b);
}

Result<IoApic::State> decode_ioapic(const Section& sec) {
    Decoder d = TRY(Decoder::of(sec, kLegacyStateVersion));
    IoApic::State s;
    s.select = TRY(d.u8("select"));
    s.id = TRY(d.u32("id"));
    for (auto& r : s.redirection) r = TRY(d.u64("redirection"));
    for (auto& b : s.level) b = TRY(d.boolean("level"));
    for (auto& b : s.irr) b = TRY(d.boolean("irr"));
    TRY(d.finish());
    return s;
}

}  // namespace kestrel::migration
