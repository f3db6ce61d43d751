#include "devices/legacy/acpi_pm.hpp"

#include <doctest/doctest.h>

#include "boot/x86_layout.hpp"

using namespace kestrel;

namespace {
uint8_t rd(BusDevice& d, uint64_t off) {
    uint8_t v = 0xee;
    d.read(off, std::span(&v, 1));
    return v;
}
void wr(BusDevice& d, uint64_t off, uint8_t v) { d.write(off, std::span<const uint8_t>(&v, 1)); }
constexpr uint8_t kSlpEn = 0x20;
}  // namespace

TEST_CASE("acpi-pm: S5 with SLP_EN powers off, reset value resets") {
    int poweroffs = 0, resets = 0;
    AcpiPmDevice pm([&] { ++poweroffs; }, [&] { ++resets; });
    wr(pm, 0, static_cast<uint8_t>(x86::kAcpiS5SleepType << 2));  // SLP_TYP without SLP_EN
    CHECK(poweroffs == 0);
    wr(pm, 0, static_cast<uint8_t>(x86::kAcpiS5SleepType << 2 | kSlpEn));
    CHECK(poweroffs == 1);
    wr(pm, 2, x86::kAcpiResetValue);
    CHECK(resets == 1);
    CHECK(poweroffs == 1);
}

TEST_CASE("acpi-pm: other writes are ignored; unsupported sleep wakes at once") {
    int poweroffs = 0, resets = 0;
    AcpiPmDevice pm([&] { ++poweroffs; }, [&] { ++resets; });
    wr(pm, 2, 0x00);
    wr(pm, 2, 0xff);
    CHECK(rd(pm, 1) == 0);
    wr(pm, 0, static_cast<uint8_t>(3 << 2 | kSlpEn));  // S3
    CHECK(rd(pm, 1) == 0x80);                         // WAK_STS
    wr(pm, 1, 0x80);                                  // write 1 to clear
    CHECK(rd(pm, 1) == 0);
    wr(pm, 3, 0xff);  // beyond the three registers
    CHECK(rd(pm, 0) == 0);
    CHECK(rd(pm, 2) == 0);
    CHECK(poweroffs == 0);
    CHECK(resets == 0);
}
