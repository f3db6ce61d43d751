#include "devices/legacy/uart16550.hpp"

#include <doctest/doctest.h>

#include <numeric>
#include <string>
#include <thread>
#include <vector>

using namespace kestrel;

namespace {

struct RecordingLine : InterruptLine {
    std::vector<bool> levels;
    void set_level(bool asserted) override { levels.push_back(asserted); }
    bool level() const { return !levels.empty() && levels.back(); }
};

// Register offsets and values spelled out here (not taken from the implementation) so the
// test checks the datasheet, not itself.
constexpr uint64_t kThr = 0, kIer = 1, kIir = 2, kFcr = 2, kLcr = 3, kMcr = 4, kLsr = 5, kMsr = 6, kScr = 7;

uint8_t rd(BusDevice& d, uint64_t off) {
    uint8_t v = 0xee;
    d.read(off, std::span(&v, 1));
    return v;
}
void wr(BusDevice& d, uint64_t off, uint8_t v) { d.write(off, std::span<const uint8_t>(&v, 1)); }

// Everything the UART has transmitted so far, taken out of its buffer.
std::string take(SerialTxBuffer& tx) {
    std::string s;
    uint8_t buf[256];
    while (size_t n = tx.peek(buf)) {
        s.append(reinterpret_cast<const char*>(buf), n);
        tx.pop(n);
    }
    return s;
}

std::span<const uint8_t> bytes(const std::string& s) {
    return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

}  // namespace

TEST_CASE("uart16550: transmitted bytes reach the output fd in order") {
    auto tx = std::make_shared<SerialTxBuffer>();
    auto line = std::make_shared<RecordingLine>();
    Uart16550 uart(line, tx);
    for (char c : std::string("hello\n")) wr(uart, kThr, static_cast<uint8_t>(c));
    CHECK(take(*tx) == "hello\n");
    CHECK(tx->dropped() == 0);
    CHECK(line->levels.empty());  // no interrupt enabled, so the line never moved
}

TEST_CASE("uart16550: reset values") {
    Uart16550 uart(nullptr, nullptr);
    CHECK(rd(uart, kIer) == 0);
    CHECK(rd(uart, kIir) == 0x01);
    CHECK(rd(uart, kLcr) == 0);
    CHECK(rd(uart, kMcr) == 0);
    CHECK(rd(uart, kLsr) == 0x60);  // THRE | TEMT
    CHECK(rd(uart, kMsr) == 0xb0);  // DCD | DSR | CTS, no deltas
    CHECK(rd(uart, kScr) == 0);
    CHECK(rd(uart, 8) == 0xff);     // beyond the register file
}

TEST_CASE("uart16550: DLAB maps offsets 0/1 to the divisor latch") {
    auto tx = std::make_shared<SerialTxBuffer>();
    Uart16550 uart(nullptr, tx);
    wr(uart, kIer, 0x05);
    wr(uart, kLcr, 0x83);  // DLAB + 8N1
    wr(uart, 0, 0x01);     // DLL: 115200 baud
    wr(uart, 1, 0x02);     // DLM
    CHECK(rd(uart, 0) == 0x01);
    CHECK(rd(uart, 1) == 0x02);
    CHECK(take(*tx).empty());  // the DLL write was not a transmit
    wr(uart, kLcr, 0x03);
    CHECK(rd(uart, kIer) == 0x05);  // IER untouched by the DLM write
    wr(uart, kThr, 'x');
    CHECK(take(*tx) == "x");
    wr(uart, kLcr, 0x83);
    CHECK(rd(uart, 0) == 0x01);  // latch kept
    CHECK(rd(uart, 1) == 0x02);
}

TEST_CASE("uart16550: loopback routes THR to RBR and MCR to MSR") {
    auto tx = std::make_shared<SerialTxBuffer>();
    auto line = std::make_shared<RecordingLine>();
    Uart16550 uart(line, tx);
    wr(uart, kMcr, 0x10);
    CHECK(rd(uart, kMcr) == 0x10);
    rd(uart, kMsr);  // clear the deltas of leaving the "cable attached" state
    wr(uart, kThr, 'Q');
    CHECK(take(*tx).empty());
    CHECK((rd(uart, kLsr) & 0x01) == 0x01);
    CHECK(rd(uart, kThr) == 'Q');
    CHECK((rd(uart, kLsr) & 0x01) == 0);

    // RTS->CTS, DTR->DSR, OUT1->RI, OUT2->DCD.
    wr(uart, kMcr, 0x10 | 0x02);
    CHECK(rd(uart, kMsr) == (0x10 | 0x01));  // CTS + DCTS
    CHECK(rd(uart, kMsr) == 0x10);           // deltas cleared by the read
    wr(uart, kMcr, 0x10 | 0x01 | 0x04 | 0x08);
    CHECK(rd(uart, kMsr) == (0x20 | 0x40 | 0x80 | 0x01 | 0x02 | 0x08));
    wr(uart, kMcr, 0x10 | 0x01 | 0x08);  // RI falls: trailing-edge RI delta
    CHECK(rd(uart, kMsr) == (0x20 | 0x80 | 0x04));

    // Host input waits while looped back, then arrives.
    const std::string in = "z";
    CHECK(uart.enqueue_input(bytes(in)) == 1);
    CHECK((rd(uart, kLsr) & 0x01) == 0);
    wr(uart, kMcr, 0x00);
    CHECK((rd(uart, kLsr) & 0x01) == 0x01);
    CHECK(rd(uart, kThr) == 'z');
    wr(uart, kThr, 'o');
    CHECK(take(*tx) == "o");
}

TEST_CASE("uart16550: THRE interrupt is cleared by reading IIR and re-armed by THR writes") {
    auto tx = std::make_shared<SerialTxBuffer>();
    auto line = std::make_shared<RecordingLine>();
    Uart16550 uart(line, tx);
    wr(uart, kIer, 0x02);
    CHECK(line->level());
    CHECK(rd(uart, kIir) == 0x02);
    CHECK_FALSE(line->level());
    CHECK(rd(uart, kIir) == 0x01);
    wr(uart, kThr, 'a');
    CHECK(line->level());
    CHECK(rd(uart, kIir) == 0x02);
    CHECK_FALSE(line->level());
    // Disabling and re-enabling ETBEI with THR empty raises it again (Linux's THRE test).
    wr(uart, kIer, 0x00);
    wr(uart, kIer, 0x02);
    CHECK(line->level());
    wr(uart, kIer, 0x00);
    CHECK_FALSE(line->level());
    CHECK(line->levels == std::vector<bool>{true, false, true, false, true, false});
}

TEST_CASE("uart16550: RX interrupt while data is available, cleared when drained") {
    auto line = std::make_shared<RecordingLine>();
    Uart16550 uart(line, nullptr);
    wr(uart, kIer, 0x01);
    CHECK_FALSE(line->level());
    CHECK(uart.enqueue_input(bytes("ab")) == 2);
    CHECK(line->level());
    CHECK(rd(uart, kIir) == 0x04);
    CHECK(rd(uart, kLsr) == 0x61);
    CHECK(rd(uart, kThr) == 'a');
    CHECK(line->level());  // 'b' moved from the backlog into RBR (FIFOs off)
    CHECK(rd(uart, kThr) == 'b');
    CHECK_FALSE(line->level());
    CHECK(rd(uart, kIir) == 0x01);
    CHECK(rd(uart, kLsr) == 0x60);
    CHECK(rd(uart, kThr) == 0);  // empty RBR
}

TEST_CASE("uart16550: FIFO mode reports trigger level and character timeout") {
    auto line = std::make_shared<RecordingLine>();
    Uart16550 uart(line, nullptr);
    wr(uart, kFcr, 0x41);  // enable, trigger at 4
    wr(uart, kIer, 0x01);
    uart.enqueue_input(bytes("abc"));
    CHECK(rd(uart, kIir) == 0xcc);  // below trigger: timeout indication
    uart.enqueue_input(bytes("d"));
    CHECK(rd(uart, kIir) == 0xc4);
    wr(uart, kFcr, 0x43);  // clear RX FIFO
    CHECK(rd(uart, kLsr) == 0x60);
    CHECK_FALSE(line->level());
    CHECK(rd(uart, kIir) == 0xc1);
}

TEST_CASE("uart16550: IIR reports the highest-priority source") {
    auto line = std::make_shared<RecordingLine>();
    Uart16550 uart(line, nullptr);
    wr(uart, kMcr, 0x10);  // loopback
    wr(uart, kIer, 0x0f);
    // Pending now: THRE (ETBEI enabled) and modem status (deltas from entering loopback).
    CHECK(rd(uart, kIir) == 0x02);  // THRE above modem status; this read clears THRE
    CHECK(rd(uart, kIir) == 0x00);  // modem status
    wr(uart, kThr, 'x');            // FIFOs off: RBR holds 'x' ...
    wr(uart, kThr, 'y');            // ... so 'y' overruns
    CHECK(rd(uart, kIir) == 0x06);  // line status first
    CHECK(rd(uart, kLsr) == 0x63);  // DR | OE | THRE | TEMT; reading clears OE
    CHECK(rd(uart, kIir) == 0x04);  // then received data
    CHECK(rd(uart, kThr) == 'x');
    CHECK(rd(uart, kIir) == 0x02);  // then THRE (re-armed by the writes)
    CHECK(rd(uart, kIir) == 0x00);  // then modem status
    CHECK(rd(uart, kMsr) == 0x0b);  // DCTS, DDSR, DDCD: the cable lines dropped on entering loopback
    CHECK(rd(uart, kIir) == 0x01);
    CHECK_FALSE(line->level());
}

TEST_CASE("uart16550: input beyond FIFO + backlog is refused, accepted bytes arrive in order") {
    int drained = 0;
    Uart16550 uart(nullptr, nullptr, [&] { ++drained; });
    wr(uart, kFcr, 0x07);
    std::vector<uint8_t> in(Uart16550::kRxFifoSize + Uart16550::kRxBacklogCapacity + 10);
    for (size_t i = 0; i < in.size(); ++i) in[i] = static_cast<uint8_t>(i * 7);
    const size_t accepted = uart.enqueue_input(in);
    CHECK(accepted == Uart16550::kRxFifoSize + Uart16550::kRxBacklogCapacity);
    CHECK(uart.enqueue_input(in) == 0);
    CHECK((rd(uart, kLsr) & 0x02) == 0);  // refusal is back-pressure, not an overrun
    for (size_t i = 0; i < accepted; ++i) {
        REQUIRE((rd(uart, kLsr) & 0x01) == 0x01);
        REQUIRE(rd(uart, kThr) == in[i]);
        if (i + 1 < accepted) REQUIRE(drained == 0);
    }
    CHECK((rd(uart, kLsr) & 0x01) == 0);
    CHECK(drained == 1);
    CHECK(uart.enqueue_input(bytes("k")) == 1);
    CHECK(rd(uart, kThr) == 'k');
    CHECK(drained == 1);  // only after a refusal
}

TEST_CASE("uart16550: loopback overrun of the 64-byte FIFO sets OE and drops the byte") {
    Uart16550 uart(nullptr, nullptr);
    wr(uart, kFcr, 0x01);
    wr(uart, kMcr, 0x10);
    for (unsigned i = 0; i < Uart16550::kRxFifoSize + 1; ++i) wr(uart, kThr, static_cast<uint8_t>(i));
    CHECK(rd(uart, kLsr) == 0x63);
    CHECK(rd(uart, kLsr) == 0x61);  // OE cleared by the read
    unsigned n = 0;
    while (rd(uart, kLsr) & 0x01) CHECK(rd(uart, kThr) == n++);
    CHECK(n == Uart16550::kRxFifoSize);
}

TEST_CASE("uart16550: Linux 8250 autoconfig sees a 16550A") {
    auto tx = std::make_shared<SerialTxBuffer>();
    auto line = std::make_shared<RecordingLine>();
    Uart16550 uart(line, tx);
    // IER test: bits 0..3 writable, zero reads zero.
    const uint8_t saved_ier = rd(uart, kIer);
    wr(uart, kIer, 0);
    CHECK((rd(uart, kIer) & 0x0f) == 0);
    wr(uart, kIer, 0x0f);
    CHECK((rd(uart, kIer) & 0x0f) == 0x0f);
    wr(uart, kIer, saved_ier);
    // Loopback test: MCR = LOOP | OUT2 | RTS must give DCD | CTS.
    const uint8_t saved_mcr = rd(uart, kMcr);
    const uint8_t saved_lcr = rd(uart, kLcr);
    wr(uart, kMcr, 0x10 | 0x0a);
    CHECK((rd(uart, kMsr) & 0xf0) == 0x90);
    wr(uart, kMcr, saved_mcr);
    // EFR probe (offset 2 with LCR=0xBF is FCR on a 16550A), then enable FIFOs.
    wr(uart, kLcr, 0xbf);
    wr(uart, 2, 0);
    wr(uart, kLcr, 0);
    wr(uart, kFcr, 0x01);
    CHECK((rd(uart, kIir) >> 6) == 3);  // => autoconfig_16550a
    // autoconfig_16550a: no EFR behind LCR=0x80 or 0xBF (IIR must not read 0 there).
    wr(uart, kLcr, 0x80);
    CHECK(rd(uart, 2) != 0);
    wr(uart, kLcr, 0xbf);
    CHECK(rd(uart, 2) != 0);
    // Not a NS16550 SuperIO: bit 4 of offset 2 under LCR=0xE0 does not follow MCR LOOP.
    wr(uart, kLcr, 0);
    const uint8_t mcr = rd(uart, kMcr);
    wr(uart, kLcr, 0xe0);
    const uint8_t excr1 = rd(uart, 2);
    CHECK(((excr1 ^ mcr) & 0x10) == 0);
    wr(uart, kLcr, 0);
    wr(uart, kMcr, mcr ^ 0x10);
    wr(uart, kLcr, 0xe0);
    CHECK(((rd(uart, 2) ^ mcr) & 0x10) == 0);
    wr(uart, kLcr, 0);
    wr(uart, kMcr, mcr);
    // Not a 16750: no 64-byte-FIFO bit with or without DLAB.
    wr(uart, kFcr, 0x21);
    CHECK((rd(uart, kIir) & 0xe0) == 0xc0);
    wr(uart, kLcr, 0x80);
    wr(uart, kFcr, 0x21);
    CHECK((rd(uart, kIir) & 0xe0) == 0xc0);
    wr(uart, kLcr, 0);
    // Not an XScale UART: IER bit 6 (UUE) does not stick.
    wr(uart, kIer, 0x40);
    CHECK((rd(uart, kIer) & 0x40) == 0);
    wr(uart, kIer, 0);
    // The FCR value the brief names: FIFOs on, both cleared, trigger 14.
    wr(uart, kFcr, 0xe7);
    CHECK((rd(uart, kIir) & 0xc0) == 0xc0);
    // Scratch register holds what is written (autoconfig_8250's 16450 test).
    wr(uart, kScr, 0xa5);
    CHECK(rd(uart, kScr) == 0xa5);
    wr(uart, kScr, 0x5a);
    CHECK(rd(uart, kScr) == 0x5a);
    wr(uart, kLcr, saved_lcr);

    // serial8250_do_startup: clear FIFOs, LSR must not read 0xff.
    wr(uart, kFcr, 0x01);
    wr(uart, kFcr, 0x07);
    wr(uart, kFcr, 0);
    rd(uart, kLsr);
    rd(uart, kThr);
    rd(uart, kIir);
    rd(uart, kMsr);
    CHECK(rd(uart, kLsr) != 0xff);
    // THRE re-assertion test: both IIR reads must show an interrupt.
    wr(uart, kIer, 0x02);
    const uint8_t iir1 = rd(uart, kIir);
    wr(uart, kIer, 0);
    wr(uart, kIer, 0x02);
    const uint8_t iir2 = rd(uart, kIir);
    wr(uart, kIer, 0);
    CHECK((iir1 & 0x01) == 0);
    CHECK((iir2 & 0x01) == 0);
    // TXEN test: enabling THRI gives TEMT and a pending interrupt.
    wr(uart, kIer, 0x02);
    CHECK((rd(uart, kLsr) & 0x40) == 0x40);
    CHECK((rd(uart, kIir) & 0x01) == 0);
    wr(uart, kIer, 0);
    CHECK(take(*tx).empty());  // the whole probe transmitted nothing
    CHECK_FALSE(line->level());
}

TEST_CASE("uart16550: transmit never waits: beyond the buffer bytes are dropped and counted, THRE stays set") {
    // Nobody drains the buffer: a reader that stopped reading.
    auto tx = std::make_shared<SerialTxBuffer>(16);
    auto line = std::make_shared<RecordingLine>();
    Uart16550 uart(line, tx);
    wr(uart, kIer, 0x02);
    CHECK(rd(uart, kIir) == 0x02);
    std::string sent;
    for (int i = 0; i < 40; ++i) {
        sent += static_cast<char>('A' + i % 26);
        wr(uart, kThr, static_cast<uint8_t>(sent.back()));
        // The guest sees every byte leave at once (THRE, TEMT) and gets its THRE interrupt.
        REQUIRE(rd(uart, kLsr) == 0x60);
        REQUIRE(rd(uart, kIir) == 0x02);
    }
    CHECK(tx->dropped() == 24);
    CHECK(take(*tx) == sent.substr(0, 16));  // the oldest bytes, in order
    wr(uart, kThr, '!');
    CHECK(take(*tx) == "!");
}

TEST_CASE("uart16550: concurrent input and guest reads lose nothing") {
    Uart16550 uart(nullptr, nullptr);
    wr(uart, kFcr, 0x01);
    constexpr size_t kTotal = 20000;
    std::thread producer([&] {
        size_t sent = 0;
        while (sent < kTotal) {
            uint8_t b = static_cast<uint8_t>(sent % 251);
            sent += uart.enqueue_input(std::span(&b, 1));
        }
    });
    size_t got = 0;
    bool in_order = true;
    while (got < kTotal) {
        if (rd(uart, kLsr) & 0x01) {
            in_order &= rd(uart, kThr) == static_cast<uint8_t>(got % 251);
            ++got;
        }
    }
    producer.join();
    CHECK(in_order);
    CHECK((rd(uart, kLsr) & 0x01) == 0);
}

namespace {

// Drives a UART the way a guest would and records everything it could observe: every read
// value and the interrupt line after each step. Two UARTs in the same state give the same
// trace (and transmit the same bytes).
std::vector<int> guest_trace(Uart16550& uart, RecordingLine& line, SerialTxBuffer& tx) {
    std::vector<int> trace;
    auto note = [&](uint64_t off) {
        trace.push_back(rd(uart, off));
        trace.push_back(line.level() ? 1 : 0);
    };
    auto drain = [&] {
        for (int i = 0; i < 300 && (rd(uart, kLsr) & 0x01); ++i) {
            note(kIir);
            note(kThr);
        }
    };
    for (uint64_t off = 1; off < 8; ++off) note(off);  // IER, IIR, LCR, MCR, LSR, MSR, SCR
    const uint8_t lcr = rd(uart, kLcr);
    wr(uart, kLcr, static_cast<uint8_t>(lcr | 0x80));
    note(0);  // DLL
    note(1);  // DLM
    wr(uart, kLcr, lcr);
    note(kLsr);
    drain();
    wr(uart, kMcr, 0x0b);  // leave loopback: the backlog moves into the FIFO
    note(kMsr);
    drain();
    wr(uart, kThr, 'x');
    note(kIir);
    uart.enqueue_input(bytes("tail"));
    drain();
    for (char c : take(tx)) trace.push_back(c);
    return trace;
}

// A UART in a state with something in every corner: divisor and LCR, FIFOs on with a trigger
// level, loopback with modem deltas, an overrun, a full FIFO, a backlog, THRE armed and the
// interrupt line up.
void drive_into_busy_state(Uart16550& uart) {
    wr(uart, kLcr, 0x83);
    wr(uart, 0, 0x01);
    wr(uart, 1, 0x02);
    wr(uart, kLcr, 0x1b);
    wr(uart, kFcr, 0x87);  // FIFOs on, RX cleared, trigger 8
    wr(uart, kMcr, 0x13);  // loopback, RTS, DTR: DCD drops -> DDCD
    for (unsigned i = 0; i < Uart16550::kRxFifoSize + 2; ++i) wr(uart, kThr, static_cast<uint8_t>(0x80 + i));
    std::string in(100, '\0');
    for (size_t i = 0; i < in.size(); ++i) in[i] = static_cast<char>('!' + i % 90);
    CHECK(uart.enqueue_input(bytes(in)) == in.size());  // waits in the backlog while looped back
    wr(uart, kScr, 0x5a);
    wr(uart, kIer, 0x0f);
}

}  // namespace

TEST_CASE("uart16550: save/restore round trip reproduces every register, the line and what follows") {
    auto tx_a = std::make_shared<SerialTxBuffer>();
    auto line_a = std::make_shared<RecordingLine>();
    Uart16550 a(line_a, tx_a);
    drive_into_busy_state(a);
    REQUIRE(line_a->level());

    const Uart16550::State saved = a.save();
    CHECK(saved.fcr == 0x81);
    CHECK(saved.lsr_errors == 0x02);
    CHECK(saved.msr_deltas == 0x08);
    CHECK(saved.rx_fifo.size() == Uart16550::kRxFifoSize);
    CHECK(saved.rx_backlog.size() == 100);
    CHECK(saved.thre_pending);

    auto tx_b = std::make_shared<SerialTxBuffer>();
    auto line_b = std::make_shared<RecordingLine>();
    Uart16550 b(line_b, tx_b);
    REQUIRE(b.restore(saved));
    CHECK(line_b->levels == std::vector<bool>{true});  // raised once, by restore itself
    CHECK(b.save() == saved);
    CHECK(a.save() == saved);  // saving has no side effects

    const auto trace_a = guest_trace(a, *line_a, *tx_a);
    const auto trace_b = guest_trace(b, *line_b, *tx_b);
    CHECK(trace_a.size() > 400);
    CHECK(trace_a == trace_b);
    CHECK(a.save() == b.save());
    CHECK(line_a->level() == line_b->level());
}

TEST_CASE("uart16550: save/restore of a quiet state lowers the line") {
    auto line_b = std::make_shared<RecordingLine>();
    Uart16550 b(line_b, nullptr);
    drive_into_busy_state(b);
    REQUIRE(line_b->level());
    Uart16550 fresh(nullptr, nullptr);
    REQUIRE(b.restore(fresh.save()));
    CHECK_FALSE(line_b->level());
    CHECK(b.save() == fresh.save());
}

TEST_CASE("uart16550: save/restore refuses hostile states and leaves the device as it was") {
    auto line = std::make_shared<RecordingLine>();
    Uart16550 uart(line, nullptr);
    drive_into_busy_state(uart);
    const Uart16550::State before = uart.save();
    const size_t levels_before = line->levels.size();

    struct Case {
        const char* field;
        void (*mutate)(Uart16550::State&);
    };
    const Case cases[] = {
        {"ier", [](Uart16550::State& s) { s.ier = 0x1f; }},
        {"mcr", [](Uart16550::State& s) { s.mcr = 0x33; }},
        {"fcr", [](Uart16550::State& s) { s.fcr = 0x89; }},  // DMA mode bit / clear bit
        {"fcr", [](Uart16550::State& s) {  // trigger level with FIFOs off
             s.fcr = 0x80;
             s.rx_fifo.resize(1);
         }},
        {"lsr_errors", [](Uart16550::State& s) { s.lsr_errors = 0x21; }},
        {"msr_deltas", [](Uart16550::State& s) { s.msr_deltas = 0x10; }},
        {"rx_fifo holds 70 bytes, more than its 64", [](Uart16550::State& s) { s.rx_fifo.resize(70); }},
        {"rx_fifo holds 2 bytes, more than its 1", [](Uart16550::State& s) {
             s.fcr = 0;
             s.rx_fifo.resize(2);
         }},
        {"rx_backlog holds 4097 bytes", [](Uart16550::State& s) {
             s.rx_backlog.resize(Uart16550::kRxBacklogCapacity + 1);
         }},
        {"rx_backlog", [](Uart16550::State& s) {  // backlog beside a FIFO with room, not looped back
             s.mcr = 0x0b;
             s.rx_fifo.resize(3);
         }},
    };
    for (const Case& c : cases) {
        CAPTURE(c.field);
        Uart16550::State bad = before;
        c.mutate(bad);
        const auto r = uart.restore(bad);
        REQUIRE_FALSE(r);
        CHECK(r.error().kind == ErrorKind::BadRequest);
        CHECK(r.error().message.starts_with("uart: "));
        CHECK(r.error().message.find(c.field) != std::string::npos);
        CHECK(uart.save() == before);
        CHECK(line->levels.size() == levels_before);
    }
}
