#include "devices/legacy/ioapic.hpp"

#include <doctest/doctest.h>

#include <string>
#include <utility>
#include <vector>

using namespace kestrel;

namespace {

struct RecordingSink final : IoApicSink {
    struct Message {
        uint16_t pin;
        uint64_t address;
        uint32_t data;
    };
    std::vector<Message> configured;
    std::vector<uint16_t> fired;  // the pin whose routed message each delivery carried
    void route(uint8_t pin, uint64_t address, uint32_t data) override {
        configured.push_back({pin, address, data});
    }
    void deliver(uint64_t address, uint32_t data) override {
        for (auto it = configured.rbegin(); it != configured.rend(); ++it) {
            if (it->address == address && it->data == data) {
                fired.push_back(it->pin);
                return;
            }
        }
        fired.push_back(0xffff);  // a message never routed: the assertions below catch it
    }
};

void wr32(BusDevice& d, uint64_t off, uint32_t v) {
    const uint8_t b[4] = {uint8_t(v), uint8_t(v >> 8), uint8_t(v >> 16), uint8_t(v >> 24)};
    d.write(off, std::span<const uint8_t>(b, 4));
}
uint32_t rd32(BusDevice& d, uint64_t off) {
    uint8_t b[4] = {};
    d.read(off, std::span(b, 4));
    return b[0] | b[1] << 8 | b[2] << 16 | uint32_t{b[3]} << 24;
}
uint32_t reg(IoApic& io, uint8_t index) {
    wr32(io, 0x00, index);
    return rd32(io, 0x10);
}
void set_reg(IoApic& io, uint8_t index, uint32_t v) {
    wr32(io, 0x00, index);
    wr32(io, 0x10, v);
}
void program(IoApic& io, uint8_t pin, uint32_t low, uint8_t dest) {
    set_reg(io, static_cast<uint8_t>(0x11 + 2 * pin), uint32_t{dest} << 24);
    set_reg(io, static_cast<uint8_t>(0x10 + 2 * pin), low);
}

}  // namespace

TEST_CASE("ioapic: version, id and masked reset state") {
    auto sink = std::make_shared<RecordingSink>();
    IoApic io(sink);
    CHECK(reg(io, 0x01) == 0x00170011);  // 24 entries, version 0x11
    set_reg(io, 0x00, 0xffffffff);
    CHECK(reg(io, 0x00) == 0x0f000000);  // only the 4-bit ID is writable
    for (uint8_t pin = 0; pin < IoApic::kPins; ++pin) CHECK(io.redirection_entry(pin) == IoApic::kMasked);
    CHECK(reg(io, 0x10 + 2 * 24) == 0);  // past the last entry
    io.set_level(4, true);
    CHECK(sink->fired.empty());
}

TEST_CASE("ioapic: an edge pin becomes the SDM's MSI message and fires on rising edges only") {
    auto sink = std::make_shared<RecordingSink>();
    IoApic io(sink);
    program(io, 4, 0x0000'0031, 3);  // vector 0x31, fixed, physical, edge, unmasked, APIC 3
    REQUIRE(!sink->configured.empty());
    const auto& m = sink->configured.back();
    CHECK(m.pin == 4);
    CHECK(m.address == 0xfee03000);
    CHECK(m.data == 0x31);
    io.set_level(4, true);
    io.set_level(4, true);  // no new edge
    io.set_level(4, false);
    io.set_level(4, true);
    CHECK(sink->fired == std::vector<uint16_t>{4, 4});
    CHECK(reg(io, 0x10 + 8) == 0x31);
    CHECK(reg(io, 0x11 + 8) == 0x03000000);
}

TEST_CASE("ioapic: an edge while masked waits for the unmask") {
    auto sink = std::make_shared<RecordingSink>();
    IoApic io(sink);
    program(io, 2, 0x0001'0040, 0);  // masked
    io.set_level(2, true);
    CHECK(sink->fired.empty());
    set_reg(io, 0x10 + 4, 0x0000'0040);  // unmask
    CHECK(sink->fired == std::vector<uint16_t>{2});
}

TEST_CASE("ioapic: level pins hold Remote IRR until EOI and fire again while still asserted") {
    auto sink = std::make_shared<RecordingSink>();
    IoApic io(sink);
    program(io, 9, 0x0000'8000 | 0x0800 | 0x0100 | 0x52, 0x01);  // level, logical, lowest prio
    const auto& m = sink->configured.back();
    CHECK(m.address == 0xfee01004);
    CHECK(m.data == (0x52 | 0x100 | 0x8000 | 0x4000));
    io.set_level(9, true);
    io.set_level(9, true);
    CHECK(sink->fired.size() == 1);
    CHECK((io.redirection_entry(9) & IoApic::kRemoteIrr) != 0);
    set_reg(io, 0x10 + 18, 0x0000'8000 | 0x0800 | 0x0100 | 0x52 | IoApic::kRemoteIrr);  // RO bit
    CHECK((io.redirection_entry(9) & IoApic::kRemoteIrr) != 0);
    io.end_of_interrupt(0x53);  // another vector: nothing
    CHECK(sink->fired.size() == 1);
    io.end_of_interrupt(0x52);  // still asserted: again
    CHECK(sink->fired.size() == 2);
    io.set_level(9, false);
    io.end_of_interrupt(0x52);
    CHECK((io.redirection_entry(9) & IoApic::kRemoteIrr) == 0);
    CHECK(sink->fired.size() == 2);
}

TEST_CASE("ioapic: switching a level entry to edge clears Remote IRR (Linux's EOI for 0x11 parts)") {
    auto sink = std::make_shared<RecordingSink>();
    IoApic io(sink);
    program(io, 5, 0x0000'8000 | 0x60, 0);
    io.set_level(5, true);
    REQUIRE((io.redirection_entry(5) & IoApic::kRemoteIrr) != 0);
    set_reg(io, 0x10 + 10, 0x0001'0060);  // edge + masked
    CHECK((io.redirection_entry(5) & IoApic::kRemoteIrr) == 0);
}

TEST_CASE("ioapic: out-of-range pins and odd offsets are ignored") {
    auto sink = std::make_shared<RecordingSink>();
    IoApic io(sink);
    io.set_level(200, true);
    wr32(io, 0x20, 0xdeadbeef);
    CHECK(rd32(io, 0x20) == 0);
    set_reg(io, 0xff, 0x1234);
    CHECK(reg(io, 0xff) == 0);
    CHECK(sink->fired.empty());
}

namespace {

// An IOAPIC with something in every corner: an ID, an edge pin, a level pin in service
// (Remote IRR) and still asserted, a masked edge pin holding an edge in IRR, a masked level
// pin asserted, and the select register left pointing somewhere.
void drive_into_busy_state(IoApic& io) {
    set_reg(io, 0x00, 0x0a00'0000);
    program(io, 4, 0x0000'0031, 3);                              // edge, unmasked
    program(io, 9, 0x0000'8000 | 0x0800 | 0x0100 | 0x52, 0x01);  // level, logical, lowest prio
    io.set_level(9, true);
    program(io, 2, 0x0001'0040, 0);  // edge, masked
    io.set_level(2, true);
    program(io, 7, 0x0001'8000 | 0x61, 2);  // level, masked
    io.set_level(7, true);
    wr32(io, 0x00, 0x13);
}

// The last message routed for each pin, as the sink (KVM's routes) knows it.
std::vector<std::pair<uint64_t, uint32_t>> routes(const RecordingSink& sink) {
    std::vector<std::pair<uint64_t, uint32_t>> out(IoApic::kPins, {0, 0});
    for (const auto& m : sink.configured) out.at(m.pin) = {m.address, m.data};
    return out;
}

// Every register the guest can read: IOREGSEL as left, then each indirect register.
std::vector<uint32_t> read_everything(IoApic& io) {
    std::vector<uint32_t> out{rd32(io, 0x00)};
    for (unsigned index = 0; index < 0x40; ++index) out.push_back(reg(io, static_cast<uint8_t>(index)));
    return out;
}

// The guest and devices carry on: EOI the level vector (still asserted: again), unmask the
// pin holding an edge, new edges, the level pin dropping and its EOI.
void carry_on(IoApic& io) {
    io.end_of_interrupt(0x52);
    set_reg(io, 0x10 + 4, 0x0000'0040);  // unmask pin 2: its held edge goes out
    io.set_level(4, true);
    io.set_level(2, false);
    io.set_level(2, true);
    set_reg(io, 0x10 + 14, 0x0000'8000 | 0x61);  // unmask pin 7: asserted level goes out
    io.set_level(9, false);
    io.end_of_interrupt(0x52);
    io.end_of_interrupt(0x61);
}

}  // namespace

TEST_CASE("ioapic: save/restore round trip reproduces registers, routes and what follows") {
    auto sink_a = std::make_shared<RecordingSink>();
    IoApic a(sink_a);
    drive_into_busy_state(a);
    REQUIRE(sink_a->fired == std::vector<uint16_t>{9});

    const IoApic::State saved = a.save();
    CHECK(saved.select == 0x13);
    CHECK(saved.id == 0x0a00'0000);
    CHECK((saved.redirection[9] & IoApic::kRemoteIrr) != 0);
    CHECK(saved.level[9]);
    CHECK(saved.irr[2]);
    CHECK(saved.level[7]);
    CHECK_FALSE(saved.irr[4]);

    auto sink_b = std::make_shared<RecordingSink>();
    IoApic b(sink_b);
    REQUIRE(b.restore(saved));
    CHECK(b.save() == saved);
    CHECK(a.save() == saved);
    CHECK(sink_b->fired.empty());  // pin 9 is in service already: no second delivery
    CHECK(routes(*sink_b) == routes(*sink_a));

    CHECK(read_everything(a) == read_everything(b));
    sink_a->fired.clear();
    carry_on(a);
    carry_on(b);
    CHECK(sink_a->fired == std::vector<uint16_t>{9, 2, 4, 2, 7, 7});
    CHECK(sink_b->fired == sink_a->fired);
    CHECK(a.save() == b.save());
    CHECK(routes(*sink_b) == routes(*sink_a));
}

TEST_CASE("ioapic: save/restore delivers what its own logic would have delivered") {
    auto sink_a = std::make_shared<RecordingSink>();
    IoApic a(sink_a);
    drive_into_busy_state(a);
    IoApic::State s = a.save();
    // As if the snapshot were taken between the assertion and its delivery: level pin 9
    // asserted without Remote IRR, and an edge held in IRR on the unmasked pin 4.
    s.redirection[9] &= ~IoApic::kRemoteIrr;
    s.irr[4] = true;
    auto sink_b = std::make_shared<RecordingSink>();
    IoApic b(sink_b);
    REQUIRE(b.restore(s));
    CHECK(sink_b->fired == std::vector<uint16_t>{4, 9});
    CHECK((b.redirection_entry(9) & IoApic::kRemoteIrr) != 0);
    CHECK_FALSE(b.save().irr[4]);
    CHECK(b.save() == a.save());
}

TEST_CASE("ioapic: save/restore refuses hostile states and leaves the device as it was") {
    auto sink = std::make_shared<RecordingSink>();
    IoApic io(sink);
    drive_into_busy_state(io);
    const IoApic::State before = io.save();
    const size_t routed = sink->configured.size(), fired = sink->fired.size();
    struct Case {
        const char* field;
        void (*mutate)(IoApic::State&);
    };
    const Case cases[] = {
        {"id", [](IoApic::State& s) { s.id = 0x1000'0000; }},
        {"id", [](IoApic::State& s) { s.id = 0x0a00'0001; }},
        {"redirection[3]", [](IoApic::State& s) { s.redirection[3] = 1ull << 17; }},             // reserved
        {"redirection[23]", [](IoApic::State& s) { s.redirection[23] = 0xffull << 32; }},        // reserved
        {"redirection[5]", [](IoApic::State& s) { s.redirection[5] |= IoApic::kDeliveryStatus; }},
        {"redirection[4]", [](IoApic::State& s) { s.redirection[4] |= IoApic::kRemoteIrr; }},  // edge entry
    };
    for (const Case& c : cases) {
        CAPTURE(c.field);
        IoApic::State bad = before;
        c.mutate(bad);
        const auto r = io.restore(bad);
        REQUIRE_FALSE(r);
        CHECK(r.error().kind == ErrorKind::BadRequest);
        CHECK(r.error().message.starts_with("ioapic: "));
        CHECK(r.error().message.find(c.field) != std::string::npos);
        CHECK(io.save() == before);
        CHECK(sink->configured.size() == routed);
        CHECK(sink->fired.size() == fired);
    }
}
