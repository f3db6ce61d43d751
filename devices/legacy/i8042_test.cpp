#include "devices/legacy/i8042.hpp"

#include <doctest/doctest.h>

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

    wr(kbc, kCmd, 0xd3);  // AUX output buffer: flagged as mouse data
    wr(kbc, kData, 0x5a);
    CHECK((rd(kbc, kCmd) & 0x21) == 0x21);
    CHECK(rd(kbc, kData) == 0x5a);
    CHECK((rd(kbc, kCmd) & 0x21) == 0);

    wr(kbc, kCmd, 0x12);  // unknown: ignored, nothing queued
    CHECK((rd(kbc, kCmd) & 0x01) == 0);
}
