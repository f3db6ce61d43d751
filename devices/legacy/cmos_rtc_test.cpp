#include "devices/legacy/cmos_rtc.hpp"

#include <doctest/doctest.h>

#include <string>
#include <vector>

using namespace kestrel;

namespace {
uint8_t cmos(BusDevice& d, uint8_t index) {
    d.write(0, std::span<const uint8_t>(&index, 1));
    uint8_t v = 0xee;
    d.read(1, std::span(&v, 1));
    return v;
}
void cmos_write(BusDevice& d, uint8_t index, uint8_t value) {
    d.write(0, std::span<const uint8_t>(&index, 1));
    d.write(1, std::span<const uint8_t>(&value, 1));
}

// 2024-02-29 21:05:09 UTC, a Thursday.
constexpr time_t kFixed = 1709240709;
constexpr uint64_t kMiB = 1024 * 1024;
}  // namespace

TEST_CASE("cmos: time in BCD, 24-hour (the PC default)") {
    CmosRtc rtc({}, [] { return kFixed; });
    CHECK(cmos(rtc, 0x00) == 0x09);
    CHECK(cmos(rtc, 0x02) == 0x05);
    CHECK(cmos(rtc, 0x04) == 0x21);
    CHECK(cmos(rtc, 0x06) == 0x05);  // Sunday = 1
    CHECK(cmos(rtc, 0x07) == 0x29);
    CHECK(cmos(rtc, 0x08) == 0x02);
    CHECK(cmos(rtc, 0x09) == 0x24);
    CHECK(cmos(rtc, 0x32) == 0x20);
    CHECK(cmos(rtc, 0x0b) == 0x02);
    CHECK((cmos(rtc, 0x0a) & 0x80) == 0);  // no UIP with an injected clock
    CHECK(cmos(rtc, 0x0d) == 0x80);        // VRT
}

TEST_CASE("cmos: binary mode and 12-hour mode") {
    CmosRtc rtc({}, [] { return kFixed; });
    cmos_write(rtc, 0x0b, 0x06);  // binary, 24h
    CHECK(cmos(rtc, 0x0b) == 0x06);
    CHECK(cmos(rtc, 0x00) == 9);
    CHECK(cmos(rtc, 0x04) == 21);
    CHECK(cmos(rtc, 0x07) == 29);
    CHECK(cmos(rtc, 0x09) == 24);
    CHECK(cmos(rtc, 0x32) == 20);
    cmos_write(rtc, 0x0b, 0x04);  // binary, 12h: 21h = 9 PM
    CHECK(cmos(rtc, 0x04) == (0x80 | 9));
    cmos_write(rtc, 0x0b, 0x00);  // BCD, 12h
    CHECK(cmos(rtc, 0x04) == (0x80 | 0x09));
}

TEST_CASE("cmos: 12-hour mode at midnight and noon") {
    time_t t = 1709164800;  // 2024-02-29 00:00:00
    CmosRtc rtc({}, [&] { return t; });
    cmos_write(rtc, 0x0b, 0x00);
    CHECK(cmos(rtc, 0x04) == 0x12);         // 12 AM
    t += 12 * 3600;
    CHECK(cmos(rtc, 0x04) == (0x80 | 0x12));  // 12 PM
    t = 946684799;  // 1999-12-31 23:59:59: the century changes with the clock
    cmos_write(rtc, 0x0b, 0x02);
    CHECK(cmos(rtc, 0x32) == 0x19);
    CHECK(cmos(rtc, 0x09) == 0x99);
    t += 1;
    CHECK(cmos(rtc, 0x32) == 0x20);
    CHECK(cmos(rtc, 0x09) == 0x00);
}

TEST_CASE("cmos: the NMI-mask bit of the index is ignored; time writes are ignored") {
    CmosRtc rtc({}, [] { return kFixed; });
    CHECK(cmos(rtc, 0x80 | 0x04) == 0x21);
    cmos_write(rtc, 0x04, 0x11);
    CHECK(cmos(rtc, 0x04) == 0x21);
    cmos_write(rtc, 0x40, 0xab);  // general-purpose RAM is kept
    CHECK(cmos(rtc, 0x40) == 0xab);
    cmos_write(rtc, 0x0c, 0x70);  // register C: stored, read once
    CHECK(cmos(rtc, 0x0c) == 0x70);
    CHECK(cmos(rtc, 0x0c) == 0x00);
    cmos_write(rtc, 0x0a, 0xa6);  // UIP is read-only
    CHECK(cmos(rtc, 0x0a) == 0x26);
    cmos_write(rtc, 0x0d, 0x00);
    CHECK(cmos(rtc, 0x0d) == 0x80);
}

TEST_CASE("cmos: memory size bytes") {
    // 3 GiB below the hole, 5 GiB above 4 GiB.
    CmosRtc rtc({.ram_below_4g = 3072 * kMiB, .ram_above_4g = 5120 * kMiB}, [] { return kFixed; });
    const unsigned above_16m = cmos(rtc, 0x34) | cmos(rtc, 0x35) << 8;
    CHECK(above_16m == (3072 - 16) * 16);  // 64 KiB units
    const unsigned above_4g = cmos(rtc, 0x5b) | cmos(rtc, 0x5c) << 8 | cmos(rtc, 0x5d) << 16;
    CHECK(above_4g == 5120 * 16);
    CHECK((cmos(rtc, 0x15) | cmos(rtc, 0x16) << 8) == 640);
    CHECK((cmos(rtc, 0x30) | cmos(rtc, 0x31) << 8) == 0xffff);  // capped, like a BIOS

    CmosRtc small({.ram_below_4g = 8 * kMiB, .ram_above_4g = 0}, [] { return kFixed; });
    CHECK(cmos(small, 0x34) == 0);
    CHECK(cmos(small, 0x35) == 0);
    CHECK((cmos(small, 0x30) | cmos(small, 0x31) << 8) == 7 * 1024);
    CHECK(cmos(small, 0x5b) == 0);
}

TEST_CASE("cmos: UIP only in the last 244 us of a second") {
    CHECK_FALSE(CmosRtc::update_in_progress(0));
    CHECK_FALSE(CmosRtc::update_in_progress(999'755'999));
    CHECK(CmosRtc::update_in_progress(999'756'000));
    CHECK(CmosRtc::update_in_progress(999'999'999));
    // With the host clock UIP is clear almost always: 100 reads see it at most rarely.
    CmosRtc rtc({}, {});
    int set = 0;
    for (int i = 0; i < 100; ++i) set += (cmos(rtc, 0x0a) & 0x80) ? 1 : 0;
    CHECK(set < 10);
    CHECK(cmos(rtc, 0x32) >= 0x20);
}

namespace {

// Everything a guest can read: the latched index, then every CMOS byte through port 0x71
// (register C twice: the read clears it).
std::vector<uint8_t> read_everything(BusDevice& d) {
    std::vector<uint8_t> out;
    uint8_t index = 0;
    d.read(0, std::span(&index, 1));
    out.push_back(index);
    for (unsigned i = 0; i < 128; ++i) out.push_back(cmos(d, static_cast<uint8_t>(i)));
    out.push_back(cmos(d, 0x0c));
    return out;
}

}  // namespace

TEST_CASE("cmos: save/restore round trip keeps RAM, modes and index; the clock carries on") {
    time_t now = kFixed;
    CmosRtc a({.ram_below_4g = 512 * kMiB, .ram_above_4g = 0}, [&] { return now; });
    cmos_write(a, 0x0b, 0x04);  // binary, 12-hour
    cmos_write(a, 0x0a, 0x2b);  // another periodic rate
    cmos_write(a, 0x0c, 0x70);  // flags waiting for their read
    cmos_write(a, 0x01, 0x30);  // alarm seconds
    for (unsigned i = 0x40; i < 0x80; ++i) cmos_write(a, static_cast<uint8_t>(i), static_cast<uint8_t>(i * 3));
    const uint8_t latch = 0x0c;
    a.write(0, std::span<const uint8_t>(&latch, 1));

    const CmosRtc::State saved = a.save();
    CHECK(saved.index == 0x0c);
    CHECK(saved.ram[0x0b] == 0x04);
    CHECK(saved.ram[0x15] == 0x80);  // 640 KiB, from a's memory sizes

    // The destination was configured with other sizes: the guest's bytes win.
    CmosRtc b({.ram_below_4g = 64 * kMiB, .ram_above_4g = 8192 * kMiB}, [&] { return now; });
    REQUIRE(b.restore(saved));
    CHECK(b.save() == saved);
    CHECK(a.save() == saved);

    const auto everything_a = read_everything(a);
    CHECK(everything_a == read_everything(b));
    CHECK(everything_a[1 + 0x04] == (0x80 | 9));  // 21h in binary 12-hour mode
    CHECK(everything_a[1 + 0x0c] == 0x70);
    CHECK(everything_a.back() == 0);
    now += 3 * 3600 + 61;  // the guest's clock continues from the host's on both sides
    CHECK(read_everything(a) == read_everything(b));
    CHECK(cmos(b, 0x04) == 12);  // 00:06:10 in binary 12-hour mode is 12 AM
    CHECK(cmos(b, 0x04) == cmos(a, 0x04));
    cmos_write(a, 0x0b, 0x02);
    cmos_write(b, 0x0b, 0x02);
    CHECK(read_everything(a) == read_everything(b));
    CHECK(a.save() == b.save());
}

TEST_CASE("cmos: save/restore refuses hostile states and leaves the device as it was") {
    CmosRtc rtc({.ram_below_4g = 512 * kMiB}, [] { return kFixed; });
    cmos_write(rtc, 0x40, 0x99);
    const CmosRtc::State before = rtc.save();
    struct Case {
        const char* field;
        void (*mutate)(CmosRtc::State&);
    };
    const Case cases[] = {
        {"index 0x80", [](CmosRtc::State& s) { s.index = 0x80; }},
        {"index 0xff", [](CmosRtc::State& s) { s.index = 0xff; }},
        {"ram[0x0a] (register A)", [](CmosRtc::State& s) { s.ram[0x0a] = 0xa6; }},
        {"ram[0x0d] (register D)", [](CmosRtc::State& s) { s.ram[0x0d] = 0x00; }},
        {"ram[0x00]", [](CmosRtc::State& s) { s.ram[0x00] = 0x12; }},
        {"ram[0x09]", [](CmosRtc::State& s) { s.ram[0x09] = 0x24; }},
        {"ram[0x32]", [](CmosRtc::State& s) { s.ram[0x32] = 0x20; }},
    };
    for (const Case& c : cases) {
        CAPTURE(c.field);
        CmosRtc::State bad = before;
        c.mutate(bad);
        const auto r = rtc.restore(bad);
        REQUIRE_FALSE(r);
        CHECK(r.error().kind == ErrorKind::BadRequest);
        CHECK(r.error().message.starts_with("cmos: "));
        CHECK(r.error().message.find(c.field) != std::string::npos);
        CHECK(rtc.save() == before);
    }
}
