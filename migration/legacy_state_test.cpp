#include "migration/legacy_state.hpp"

#include <doctest/doctest.h>

#include <string>

using namespace kestrel;
using namespace kestrel::migration;

namespace {

// One section as StateFile::parse would hand it over: written, then parsed back.
template <typename State>
Section section_of(const char* id, const State& s, uint32_t version = kLegacyStateVersion) {
    StateWriter w("test", "test cpu");
    encode(w.section(id, version), s);
    auto bytes = std::move(w).finish();
    REQUIRE(bytes.has_value());
    auto f = StateFile::parse(*bytes);
    REQUIRE(f.has_value());
    REQUIRE(f->sections.size() == 1);
    return f->sections[0];
}

template <typename T>
std::string refused(const Result<T>& r) {
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error().kind == ErrorKind::BadRequest);
    return r.error().message;
}

bool contains(const std::string& s, std::string_view part) { return s.find(part) != std::string::npos; }

Uart16550::State busy_uart() {
    Uart16550::State s;
    s.ier = 0x0f;
    s.lcr = 0x03;
    s.mcr = 0x0b;
    s.fcr = 0xc1;
    s.lsr_errors = 0x02;
    s.msr_deltas = 0x01;
    s.scr = 0x5a;
    s.dll = 0x01;
    s.dlm = 0x00;
    s.thre_pending = true;
    s.rx_fifo = {'a', 'b', 'c'};
    s.rx_backlog.assign(Uart16550::kRxBacklogCapacity, 'z');
    return s;
}

IoApic::State busy_ioapic() {
    IoApic::State s;
    s.select = 0x13;
    s.id = 0x0f000000;
    for (size_t i = 0; i < s.redirection.size(); ++i) {
        s.redirection[i] = 0x0000'0000'0001'0030ull + i;
        s.level[i] = i % 3 == 0;
        s.irr[i] = i % 5 == 0;
    }
    return s;
}

}  // namespace

TEST_CASE("legacy state: every device's state comes back field for field") {
    SUBCASE("uart") {
        auto s = busy_uart();
        auto back = decode_uart(section_of(kUartSection, s));
        REQUIRE(back.has_value());
        CHECK(*back == s);
    }
    SUBCASE("rtc") {
        CmosRtc::State s;
        s.index = 0x34;
        for (size_t i = 0; i < s.ram.size(); ++i) s.ram[i] = static_cast<uint8_t>(i * 7);
        auto back = decode_rtc(section_of(kRtcSection, s));
        REQUIRE(back.has_value());
        CHECK(*back == s);
    }
    SUBCASE("i8042") {
        I8042::State s;
        s.command_byte = 0x47;
        s.output_port = 0x03;
        s.has_answer = true;
        s.answer = 0xfa;
        s.answer_from_aux = true;
        s.keyboard.assign(I8042::kKeyboardBuffer, 0x1c);
        s.last_output = 0xaa;
        s.has_pending_cmd = true;
        s.pending_cmd = 0xd1;
        s.has_pending_kbd = true;
        s.pending_kbd = 0xed;
        s.last_write_was_command = true;
        s.scanning = false;
        auto back = decode_i8042(section_of(kI8042Section, s));
        REQUIRE(back.has_value());
        CHECK(*back == s);
    }
    SUBCASE("acpi-pm") {
        AcpiPmDevice::State s{.wake_status = true};
        auto back = decode_acpi_pm(section_of(kAcpiPmSection, s));
        REQUIRE(back.has_value());
        CHECK(*back == s);
    }
    SUBCASE("ioapic") {
        auto s = busy_ioapic();
        auto back = decode_ioapic(section_of(kIoapicSection, s));
        REQUIRE(back.has_value());
        CHECK(*back == s);
    }
}

TEST_CASE("legacy state: hostile payloads are refused naming the field") {
    SUBCASE("a bool that is 2") {
        Section sec = section_of(kUartSection, busy_uart());
        sec.payload[9] = 2;  // thre_pending, after the nine register bytes
        CHECK(contains(refused(decode_uart(sec)), "thre_pending"));
    }
    SUBCASE("an RX FIFO longer than the UART's") {
        Section sec = section_of(kUartSection, Uart16550::State{});
        sec.payload[10] = Uart16550::kRxFifoSize + 1;  // rx_fifo count, low byte
        auto msg = refused(decode_uart(sec));
        CHECK(contains(msg, "rx_fifo"));
        CHECK(contains(msg, "exceeds the maximum 64"));
    }
    SUBCASE("a count as large as a u32 goes no further than its check") {
        Section sec = section_of(kUartSection, Uart16550::State{});
        for (int i = 0; i < 4; ++i) sec.payload[10 + i] = 0xff;
        CHECK(contains(refused(decode_uart(sec)), "rx_fifo"));
    }
    SUBCASE("a keyboard buffer over 16 bytes") {
        I8042::State s;
        s.keyboard.assign(I8042::kKeyboardBuffer + 1, 0x1c);
        CHECK(contains(refused(decode_i8042(section_of(kI8042Section, s))), "keyboard"));
    }
    SUBCASE("bytes left over") {
        Section sec = section_of(kAcpiPmSection, AcpiPmDevice::State{});
        sec.payload.push_back(0);
        CHECK(contains(refused(decode_acpi_pm(sec)), "left over"));
    }
    SUBCASE("a truncated CMOS RAM") {
        Section sec = section_of(kRtcSection, CmosRtc::State{});
        sec.payload.resize(100);
        CHECK(contains(refused(decode_rtc(sec)), "'ram'"));
    }
    SUBCASE("a payload version this kestrel does not read") {
        auto msg = refused(decode_rtc(section_of(kRtcSection, CmosRtc::State{}, 2)));
        CHECK(contains(msg, "version 2"));
    }
    SUBCASE("an IOAPIC cut short in its redirection table") {
        Section sec = section_of(kIoapicSection, busy_ioapic());
        sec.payload.resize(1 + 4 + 8 * 10 + 3);
        CHECK(contains(refused(decode_ioapic(sec)), "redirection"));
    }
}
