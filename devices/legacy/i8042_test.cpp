#include "devices/legacy/i8042.hpp"

#include <doctest/doctest.h>

#include <string>
#include <vector>

using namespace kestrel;

namespace {
constexpr uint64_t kData = 0, kCmd = 4;

uint8_t rd(BusDevice& d, uint64_t off) {
    uint8_t v = 0xee;
    d.read(off, std::span(&v, 1));
    return v;
}
void wr(BusDevice& d, uint64_t off, uint8_t v) { d.write(off, std::span<const uint8_t>(&v, 1)); }
}  // namespace

TEST_CASE("i8042: idle status has no data and no input pending") {
    I8042 kbc([] {});
    const uint8_t status = rd(kbc, kCmd);
    CHECK((status & 0x01) == 0);  // OBF
    CHECK((status & 0x02) == 0);  // IBF: Linux's kb_wait() spins on this
    CHECK(status != 0xff);        // 0xff means "no controller" to Linux
    CHECK(rd(kbc, 1) == 0);       // 0x61..0x63 are not ours
}

TEST_CASE("i8042: 0xFE and the other reset-pulse commands call on_reset") {
    int resets = 0;
    I8042 kbc([&] { ++resets; });
    wr(kbc, kCmd, 0xfe);
    CHECK(resets == 1);
    wr(kbc, kCmd, 0xf0);  // pulses all four bits, reset included
    CHECK(resets == 2);
    wr(kbc, kCmd, 0xff);  // pulses nothing
    CHECK(resets == 2);
    wr(kbc, kData, 0xfe);  // a keyboard byte, not a command
    CHECK(resets == 2);
}

TEST_CASE("i8042: writing the output port with bit 0 clear resets") {
    int resets = 0;
    I8042 kbc([&] { ++resets; });
    wr(kbc, kCmd, 0xd0);
    CHECK(rd(kbc, kData) == 0x03);
    wr(kbc, kCmd, 0xd1);
    wr(kbc, kData, 0x03);
    CHECK(resets == 0);
    wr(kbc, kCmd, 0xd1);
    wr(kbc, kData, 0x02);
    CHECK(resets == 1);
}

TEST_CASE("i8042: command byte read/write, port enables, self tests") {
    I8042 kbc(nullptr);
    wr(kbc, kCmd, 0x20);
    CHECK((rd(kbc, kCmd) & 0x09) == 0x09);  // OBF, last write was a command
    const uint8_t ctr = rd(kbc, kData);
    CHECK((rd(kbc, kCmd) & 0x01) == 0);
    CHECK((ctr & 0x04) == 0x04);  // system flag (POST passed)

    wr(kbc, kCmd, 0x60);
    wr(kbc, kData, 0x47);
    CHECK((rd(kbc, kCmd) & 0x08) == 0);
    wr(kbc, kCmd, 0x20);
    CHECK(rd(kbc, kData) == 0x47);

    wr(kbc, kCmd, 0xad);
    wr(kbc, kCmd, 0xa7);
    wr(kbc, kCmd, 0x20);
    CHECK(rd(kbc, kData) == (0x47 | 0x10 | 0x20));
    wr(kbc, kCmd, 0xae);
    wr(kbc, kCmd, 0xa8);
    wr(kbc, kCmd, 0x20);
    CHECK(rd(kbc, kData) == 0x47);

    wr(kbc, kCmd, 0xaa);
    CHECK(rd(kbc, kData) == 0x55);
    wr(kbc, kCmd, 0xab);
    CHECK(rd(kbc, kData) == 0x00);
    wr(kbc, kCmd, 0xa9);
    CHECK(rd(kbc, kData) == 0x02);  // AUX interface: clock stuck high, i.e. no AUX port

    wr(kbc, kCmd, 0xd3);  // AUX loopback: no AUX port, so it comes back as keyboard data
    wr(kbc, kData, 0x5a);
    CHECK((rd(kbc, kCmd) & 0x21) == 0x01);
    CHECK(rd(kbc, kData) == 0x5a);
    CHECK((rd(kbc, kCmd) & 0x21) == 0);

    wr(kbc, kCmd, 0x12);  // unknown: ignored, nothing queued
    CHECK((rd(kbc, kCmd) & 0x01) == 0);
}

namespace {

// IRQ 1 as the IOAPIC sees it: every level change, rising edges counted.
class RecordingLine final : public InterruptLine {
public:
    void set_level(bool asserted) override {
        if (asserted && !level) ++edges;
        level = asserted;
    }
    bool level = false;
    int edges = 0;
};

// What Linux's i8042_interrupt does: while OBF is set, read a byte.
std::vector<uint8_t> drain(BusDevice& d) {
    std::vector<uint8_t> out;
    while (rd(d, kCmd) & 0x01) out.push_back(rd(d, kData));
    return out;
}

using Bytes = std::vector<uint8_t>;

}  // namespace

TEST_CASE("i8042: Linux's controller probe finds no AUX port at once and keeps translation off") {
    I8042 kbc(nullptr);
    CHECK(drain(kbc).empty());  // i8042_controller_check: nothing to flush
    wr(kbc, kCmd, 0xaa);
    CHECK(rd(kbc, kData) == 0x55);
    wr(kbc, kCmd, 0x20);
    const uint8_t ctr = rd(kbc, kData);
    CHECK((ctr & 0x40) == 0);  // XLATE off: Linux sets i8042_direct, atkbd reads set 2
    CHECK((ctr & 0x01) == 0x01);
    // i8042_check_aux: the loopback answers without the AUX bit ("auxerr") ...
    wr(kbc, kCmd, 0xd3);
    wr(kbc, kData, 0x5a);
    const uint8_t st = rd(kbc, kCmd);
    CHECK((st & 0x01) == 0x01);
    CHECK((st & 0x20) == 0);
    // ... and the interface test that follows, answered in place of the unread byte, fails.
    wr(kbc, kCmd, 0xa9);
    CHECK(drain(kbc) == Bytes{0x02});
}

TEST_CASE("i8042: atkbd's probe: every keyboard answer is one byte and one IRQ 1 edge") {
    auto irq = std::make_shared<RecordingLine>();
    I8042 kbc(nullptr, irq);
    // GETID: ACK, then the MF2 id in set 2.
    wr(kbc, kData, 0xf2);
    CHECK(irq->level);
    CHECK(drain(kbc) == Bytes{0xfa, 0xab, 0x83});
    CHECK(irq->edges == 3);
    CHECK_FALSE(irq->level);
    // SETLEDS and SETREP take a parameter, each byte ACKed.
    wr(kbc, kData, 0xed);
    CHECK(drain(kbc) == Bytes{0xfa});
    wr(kbc, kData, 0x00);
    CHECK(drain(kbc) == Bytes{0xfa});
    wr(kbc, kData, 0xf3);
    wr(kbc, kData, 0x00);  // the keyboard's answers replace the unread ACK
    CHECK(drain(kbc) == Bytes{0xfa});
    // Reset: ACK and self test passed; echo; scan set query.
    wr(kbc, kData, 0xff);
    CHECK(drain(kbc) == Bytes{0xfa, 0xaa});
    wr(kbc, kData, 0xee);
    CHECK(drain(kbc) == Bytes{0xee});
    wr(kbc, kData, 0xf0);
    wr(kbc, kData, 0x00);
    CHECK(drain(kbc) == Bytes{0xfa, 0x02});
    wr(kbc, kData, 0xf4);
    CHECK(drain(kbc) == Bytes{0xfa});
    // 13 bytes were sent, but the ACKs of 0xF3 and 0xF0 were replaced unread by the answers
    // to their parameters: 12 edges for 10 bytes to the keyboard.
    CHECK(irq->edges == 12);
    CHECK(kbc.counters().kbd_commands == 10);
}

TEST_CASE("i8042: Ctrl-Alt-Del arrives as set 2 make and break codes, one interrupt per byte") {
    auto irq = std::make_shared<RecordingLine>();
    I8042 kbc(nullptr, irq);
    REQUIRE(kbc.send_ctrl_alt_del());
    CHECK(irq->level);
    const Bytes set2{0x14, 0x11, 0xe0, 0x71, 0xe0, 0xf0, 0x71, 0xf0, 0x11, 0xf0, 0x14};
    CHECK(drain(kbc) == set2);
    CHECK(irq->edges == static_cast<int>(set2.size()));
    CHECK_FALSE(irq->level);
    CHECK(kbc.counters().ctrl_alt_del == 1);
}

TEST_CASE("i8042: with translation on, the guest gets set 1 and the translated keyboard id") {
    I8042 kbc(nullptr);
    wr(kbc, kCmd, 0x60);
    wr(kbc, kData, 0x45);  // XLATE | SYS | KBDINT
    wr(kbc, kData, 0xf2);
    CHECK(drain(kbc) == Bytes{0xfa, 0xab, 0x41});
    REQUIRE(kbc.send_ctrl_alt_del());
    CHECK(drain(kbc) == Bytes{0x1d, 0x38, 0xe0, 0x53, 0xe0, 0xd3, 0xb8, 0x9d});
}

TEST_CASE("i8042: Ctrl-Alt-Del refused while the keyboard is disabled or its buffer is full") {
    I8042 kbc(nullptr);
    wr(kbc, kData, 0xf5);  // atkbd_deactivate
    CHECK(drain(kbc) == Bytes{0xfa});
    auto off = kbc.send_ctrl_alt_del();
    REQUIRE_FALSE(off);
    CHECK(off.error().kind == ErrorKind::NotAllowed);
    CHECK(drain(kbc).empty());
    wr(kbc, kData, 0xf4);  // atkbd_activate
    CHECK(drain(kbc) == Bytes{0xfa});

    REQUIRE(kbc.send_ctrl_alt_del());
    auto full = kbc.send_ctrl_alt_del();  // 11 + 11 bytes > kKeyboardBuffer: nothing queued
    REQUIRE_FALSE(full);
    CHECK(full.error().kind == ErrorKind::NotAllowed);
    CHECK(drain(kbc).size() == 11);
    CHECK(kbc.send_ctrl_alt_del());
    CHECK(kbc.counters().ctrl_alt_del == 2);
    CHECK(kbc.counters().dropped == 0);
}

TEST_CASE("i8042: keys wait while the interface is off, and a controller answer goes first") {
    auto irq = std::make_shared<RecordingLine>();
    I8042 kbc(nullptr, irq);
    wr(kbc, kCmd, 0xad);  // keyboard interface off: its bytes stay in the keyboard
    REQUIRE(kbc.send_ctrl_alt_del());
    CHECK((rd(kbc, kCmd) & 0x01) == 0);
    CHECK_FALSE(irq->level);
    wr(kbc, kCmd, 0xae);
    CHECK(irq->level);
    CHECK(irq->edges == 1);
    // A controller command's answer is read before the keyboard's bytes, and holds IRQ 1 low.
    wr(kbc, kCmd, 0x20);
    CHECK_FALSE(irq->level);
    CHECK(rd(kbc, kData) == 0x25);
    CHECK(irq->level);
    CHECK(irq->edges == 2);
    CHECK(drain(kbc).size() == 11);
    // Interrupt disabled in the command byte: the keys are there to poll, IRQ 1 stays low.
    wr(kbc, kCmd, 0x60);
    wr(kbc, kData, 0x24);
    REQUIRE(kbc.send_ctrl_alt_del());
    CHECK_FALSE(irq->level);
    CHECK(drain(kbc).size() == 11);
}

TEST_CASE("i8042: a guest that never reads keeps at most kKeyboardBuffer bytes") {
    I8042 kbc(nullptr);
    for (int i = 0; i < 100; ++i) {
        wr(kbc, kData, 0xf0);  // every command clears what the keyboard had: never more than 2
        wr(kbc, kData, 0x00);
    }
    CHECK(drain(kbc) == Bytes{0xfa, 0x02});
    CHECK(kbc.counters().dropped == 0);
}

namespace {

// A controller with something in every corner: translation on, AUX off, A20 off, a keyboard
// command waiting for its parameter, keys queued behind a controller answer, a controller
// command waiting for its data byte.
void drive_into_busy_state(I8042& kbc) {
    wr(kbc, kCmd, 0x60);
    wr(kbc, kData, 0x65);  // XLATE | AUX disabled | SYS | KBDINT
    wr(kbc, kCmd, 0xdd);   // A20 off
    wr(kbc, kData, 0xf3);  // set typematic: ACK, then waits for the rate
    REQUIRE(kbc.send_ctrl_alt_del());
    CHECK(rd(kbc, kData) == 0xfa);
    wr(kbc, kCmd, 0xaa);  // self test: 0x55 goes before the keys
    wr(kbc, kCmd, 0xd1);  // write output port: waits for its byte
}

// What a guest observes from here on, the same operations on both sides: every status and
// data read and IRQ 1 after each.
std::vector<int> guest_trace(I8042& kbc, RecordingLine& irq) {
    std::vector<int> trace;
    auto note = [&](uint8_t v) {
        trace.push_back(v);
        trace.push_back(irq.level ? 1 : 0);
    };
    auto drain_noting = [&] {
        while (rd(kbc, kCmd) & 0x01) {
            note(rd(kbc, kCmd));
            note(rd(kbc, kData));
        }
    };
    note(rd(kbc, kCmd));
    for (uint64_t off = 1; off < 4; ++off) note(rd(kbc, off));
    wr(kbc, kData, 0x03);  // the output port's byte (reset line high)
    note(rd(kbc, kCmd));
    drain_noting();        // 0x55, then the keys in set 1
    note(rd(kbc, kData));  // the last byte again
    wr(kbc, kData, 0x20);  // the typematic rate
    drain_noting();
    wr(kbc, kCmd, 0xd0);
    drain_noting();
    wr(kbc, kCmd, 0x20);
    drain_noting();
    wr(kbc, kData, 0xf2);
    drain_noting();
    return trace;
}

}  // namespace

TEST_CASE("i8042: save/restore round trip reproduces the controller, the keyboard and IRQ 1") {
    int resets_a = 0;
    auto irq_a = std::make_shared<RecordingLine>();
    I8042 a([&] { ++resets_a; }, irq_a);
    drive_into_busy_state(a);

    const I8042::State saved = a.save();
    CHECK(saved.command_byte == 0x65);
    CHECK(saved.output_port == 0x01);
    CHECK(saved.has_answer);
    CHECK(saved.answer == 0x55);
    CHECK(saved.keyboard.size() == 8);
    CHECK(saved.last_output == 0xfa);
    CHECK(saved.pending_cmd == 0xd1);
    CHECK(saved.pending_kbd == 0xf3);
    CHECK(saved.last_write_was_command);

    int resets_b = 0;
    auto irq_b = std::make_shared<RecordingLine>();
    I8042 b([&] { ++resets_b; }, irq_b);
    REQUIRE(b.restore(saved));
    CHECK(b.save() == saved);
    CHECK(a.save() == saved);
    CHECK(irq_b->level == irq_a->level);

    const auto trace_a = guest_trace(a, *irq_a);
    const auto trace_b = guest_trace(b, *irq_b);
    CHECK(trace_a.size() > 40);
    CHECK(trace_a == trace_b);
    CHECK(a.save() == b.save());
    CHECK(resets_a == 0);
    CHECK(resets_b == 0);
    CHECK(b.counters().kbd_commands == 2);  // counters are the host's, not restored
}

TEST_CASE("i8042: save/restore raises IRQ 1 when the restored keyboard has a byte for the guest") {
    auto irq_a = std::make_shared<RecordingLine>();
    I8042 a(nullptr, irq_a);
    wr(a, kData, 0xf2);  // GETID: three bytes, IRQ 1 up
    REQUIRE(irq_a->level);
    auto irq_b = std::make_shared<RecordingLine>();
    I8042 b(nullptr, irq_b);
    REQUIRE(b.restore(a.save()));
    CHECK(irq_b->level);
    CHECK(irq_b->edges == 1);
    CHECK(drain(b) == Bytes{0xfa, 0xab, 0x83});
    CHECK(irq_b->edges == 3);
    I8042 fresh(nullptr);
    REQUIRE(a.restore(fresh.save()));  // and lowers it for a quiet state
    CHECK_FALSE(irq_a->level);
}

TEST_CASE("i8042: save/restore refuses hostile states and leaves the device as it was") {
    auto irq = std::make_shared<RecordingLine>();
    I8042 kbc(nullptr, irq);
    drive_into_busy_state(kbc);
    const I8042::State before = kbc.save();
    const int edges_before = irq->edges;
    struct Case {
        const char* field;
        void (*mutate)(I8042::State&);
    };
    const Case cases[] = {
        {"keyboard holds 17 bytes, more than its 16", [](I8042::State& s) { s.keyboard.resize(17); }},
        {"has_answer", [](I8042::State& s) { s.has_answer = false; }},  // answer 0x55 left behind
        {"has_answer", [](I8042::State& s) {
             s.has_answer = false;
             s.answer = 0;
             s.answer_from_aux = true;
         }},
        {"pending_cmd 0x20", [](I8042::State& s) { s.pending_cmd = 0x20; }},
        {"has_pending_cmd", [](I8042::State& s) { s.has_pending_cmd = false; }},
        {"pending_kbd 0xf4", [](I8042::State& s) { s.pending_kbd = 0xf4; }},
        {"has_pending_kbd", [](I8042::State& s) { s.has_pending_kbd = false; }},
    };
    for (const Case& c : cases) {
        CAPTURE(c.field);
        I8042::State bad = before;
        c.mutate(bad);
        const auto r = kbc.restore(bad);
        REQUIRE_FALSE(r);
        CHECK(r.error().kind == ErrorKind::BadRequest);
        CHECK(r.error().message.starts_with("i8042: "));
        CHECK(r.error().message.find(c.field) != std::string::npos);
        CHECK(kbc.save() == before);
        CHECK(irq->edges == edges_before);
    }
}
