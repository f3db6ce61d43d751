#include "devices/pci/msix.hpp"

#include <cstring>
#include <vector>

#include <doctest/doctest.h>

using namespace kestrel;

namespace {
struct FakeSink : MsiSink {
    struct Config {
        uint16_t vector;
        uint64_t address;
        uint32_t data;
    };
    std::vector<Config> configured;
    std::vector<uint16_t> fired;
    void configure(uint16_t v, uint64_t a, uint32_t d) override { configured.push_back({v, a, d}); }
    void fire(uint16_t v) override { fired.push_back(v); }
};

void w32(MsixTable& t, uint64_t off, uint32_t v) {
    t.table_write(off, std::span(reinterpret_cast<const uint8_t*>(&v), 4));
}
uint32_t r32(MsixTable& t, uint64_t off) {
    uint32_t v = 0xdead;
    t.table_read(off, std::span(reinterpret_cast<uint8_t*>(&v), 4));
    return v;
}
uint64_t pba(MsixTable& t) {
    uint64_t v = 0;
    t.pba_read(0, std::span(reinterpret_cast<uint8_t*>(&v), 8));
    return v;
}
void program(MsixTable& t, uint16_t vector, uint64_t addr, uint32_t data) {
    w32(t, vector * 16 + 0, static_cast<uint32_t>(addr));
    w32(t, vector * 16 + 4, static_cast<uint32_t>(addr >> 32));
    w32(t, vector * 16 + 8, data);
}
constexpr uint16_t kEnable = msix::kControlEnable;
constexpr uint16_t kMaskAll = msix::kControlFunctionMask;
}  // namespace

TEST_CASE("msix: capability encoding") {
    auto b = msix::capability_body(3, 0, 0x4000, 0, 0x5000);
    CHECK(b[0] == 2);  // N-1
    CHECK(b[1] == 0);
    uint32_t table, pba_reg;
    std::memcpy(&table, &b[2], 4);
    std::memcpy(&pba_reg, &b[6], 4);
    CHECK(table == 0x4000);
    CHECK(pba_reg == 0x5000);
    auto m = msix::capability_writable();
    CHECK(m[0] == 0);
    CHECK(m[1] == 0xc0);
}

TEST_CASE("msix: entries start masked; disabled MSI-X only sets pending bits") {
    auto sink = std::make_shared<FakeSink>();
    MsixTable t(3, sink);
    CHECK(t.table_bytes() == 48);
    CHECK(t.pba_bytes() == 8);
    CHECK(r32(t, 12) == 1);
    CHECK(r32(t, 2 * 16 + 12) == 1);
    program(t, 0, 0xfee0'0000, 0x4021);
    w32(t, 12, 0);  // unmasked but MSI-X still disabled
    CHECK(sink->configured.empty());
    t.notify(0);
    CHECK(sink->fired.empty());
    CHECK(t.pending(0));
    CHECK(pba(t) == 1);
    // Linux: enable with the function masked, then drop the function mask.
    t.set_control(kEnable | kMaskAll);
    CHECK(sink->fired.empty());
    t.set_control(kEnable);
    REQUIRE(sink->configured.size() == 1);
    CHECK(sink->configured[0].vector == 0);
    CHECK(sink->configured[0].address == 0xfee0'0000);
    CHECK(sink->configured[0].data == 0x4021);
    CHECK(sink->fired == std::vector<uint16_t>{0});
    CHECK_FALSE(t.pending(0));
    CHECK(pba(t) == 0);
}

TEST_CASE("msix: vector mask, pending and unmask delivery") {
    auto sink = std::make_shared<FakeSink>();
    MsixTable t(3, sink);
    t.set_control(kEnable);
    program(t, 1, 0x1'fee0'1000, 0x31);
    t.notify(1);  // masked
    CHECK(sink->fired.empty());
    CHECK(pba(t) == 2);
    w32(t, 16 + 12, 0);  // unmask: configure, deliver the pending message, clear the bit
    REQUIRE(sink->configured.size() == 1);
    CHECK(sink->configured[0].address == 0x1'fee0'1000);
    CHECK(sink->fired == std::vector<uint16_t>{1});
    CHECK(pba(t) == 0);
    t.notify(1);
    CHECK(sink->fired.size() == 2);

    // Linux masks around a message update; same values again must not reconfigure.
    w32(t, 16 + 12, 1);
    program(t, 1, 0x1'fee0'1000, 0x31);
    w32(t, 16 + 12, 0);
    CHECK(sink->configured.size() == 1);
    w32(t, 16 + 12, 1);
    program(t, 1, 0xfee0'2000, 0x32);
    CHECK(sink->configured.size() == 1);  // still masked
    w32(t, 16 + 12, 0);
    REQUIRE(sink->configured.size() == 2);
    CHECK(sink->configured[1].data == 0x32);

    // Function mask holds everything back, clearing it delivers.
    t.set_control(kEnable | kMaskAll);
    t.notify(1);
    t.notify(1);
    CHECK(sink->fired.size() == 2);
    CHECK(t.pending(1));
    t.set_control(kEnable);
    CHECK(sink->fired.size() == 3);  // one pending bit, one message
    CHECK_FALSE(t.pending(1));
    t.notify(7);  // out of range
    CHECK(sink->fired.size() == 3);
}

TEST_CASE("msix: 8-byte accesses and hostile accesses") {
    auto sink = std::make_shared<FakeSink>();
    MsixTable t(2, sink);
    t.set_control(kEnable);
    uint64_t addr = 0x0000'0001'fee0'0003;  // low two bits are not stored
    t.table_write(16, std::span(reinterpret_cast<const uint8_t*>(&addr), 8));
    uint64_t data_ctrl = 0x0000'0000'0000'0055;  // data 0x55, unmasked
    t.table_write(24, std::span(reinterpret_cast<const uint8_t*>(&data_ctrl), 8));
    REQUIRE(sink->configured.size() == 1);
    CHECK(sink->configured[0].address == 0x1'fee0'0000);
    CHECK(sink->configured[0].data == 0x55);
    uint64_t back = 0;
    t.table_read(16, std::span(reinterpret_cast<uint8_t*>(&back), 8));
    CHECK(back == 0x1'fee0'0000);

    // Odd sizes, misalignment and offsets past the end are dropped / read zero.
    uint16_t w = 0;
    t.table_write(12, std::span(reinterpret_cast<const uint8_t*>(&w), 2));
    CHECK(r32(t, 12) == 1);
    uint32_t v = 0;
    t.table_write(13, std::span(reinterpret_cast<const uint8_t*>(&v), 4));
    t.table_write(32, std::span(reinterpret_cast<const uint8_t*>(&v), 4));
    t.table_write(28, std::span(reinterpret_cast<const uint8_t*>(&addr), 8));
    t.table_write(~uint64_t{0} - 3, std::span(reinterpret_cast<const uint8_t*>(&v), 4));
    CHECK(r32(t, 12) == 1);
    CHECK(r32(t, 32) == 0);
    CHECK(r32(t, 13) == 0);
    uint8_t b = 0x77;
    t.pba_read(0, std::span(&b, 1));
    CHECK(b == 0);
    t.pba_read(8, std::span(reinterpret_cast<uint8_t*>(&v), 4));
    CHECK(v == 0);
    CHECK(sink->configured.size() == 1);
}

TEST_CASE("msix: a table without a sink only tracks pending bits") {
    MsixTable t(1, nullptr);
    t.set_control(kEnable);
    t.notify(0);
    CHECK(t.pending(0));
    w32(t, 12, 0);
    CHECK_FALSE(t.pending(0));
}

TEST_CASE("msix: save and restore carry the table and PBA; restore configures and delivers") {
    auto sink = std::make_shared<FakeSink>();
    MsixTable a(4, sink);
    a.set_control(kEnable | kMaskAll);
    program(a, 0, 0xfee0'0000, 0x41);
    program(a, 1, 0xfee0'1000, 0x42);
    w32(a, 0 * 16 + 12, 0);  // unmask 0 and 1; 2 and 3 stay masked
    w32(a, 1 * 16 + 12, 0);
    a.notify(1);  // function masked: pending
    a.notify(3);
    const auto st = a.save();
    CHECK(st.pending == std::vector<uint64_t>{0b1010});

    auto sink2 = std::make_shared<FakeSink>();
    MsixTable b(4, sink2);
    REQUIRE(b.restore(st, kEnable));  // the guest's control word: enabled, function unmasked
    CHECK(b.save().vectors == st.vectors);
    // Unmasked vectors get their messages; vector 1's pending interrupt is delivered, 3 stays.
    CHECK(sink2->configured.size() == 2);
    CHECK(sink2->fired == std::vector<uint16_t>{1});
    CHECK(pba(b) == 0b1000);
    CHECK(r32(b, 1 * 16 + 8) == 0x42);

    auto bad = st;
    bad.vectors.pop_back();
    CHECK_FALSE(b.restore(bad, kEnable));
    bad = st;
    bad.vectors[2].control = 0x3;
    CHECK_FALSE(b.restore(bad, kEnable));
    bad = st;
    bad.pending[0] = 1u << 5;
    CHECK_FALSE(b.restore(bad, kEnable));
    CHECK(b.save().vectors == st.vectors);  // refused: unchanged
}
