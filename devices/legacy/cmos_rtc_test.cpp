#include "devices/legacy/cmos_rtc.hpp"

#include <doctest/doctest.h>

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
