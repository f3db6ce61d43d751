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

TEST_CASE("acpi-pm: save/restore round trip carries WAK_STS and what follows") {
    int poweroffs_a = 0, resets_a = 0;
    AcpiPmDevice a([&] { ++poweroffs_a; }, [&] { ++resets_a; });
    wr(a, 0, static_cast<uint8_t>(1 << 2 | kSlpEn));  // S1: unsupported, wakes at once
    const AcpiPmDevice::State saved = a.save();
    CHECK(saved.wake_status);

    int poweroffs_b = 0, resets_b = 0;
    AcpiPmDevice b([&] { ++poweroffs_b; }, [&] { ++resets_b; });
    REQUIRE(b.restore(saved));
    CHECK(b.save() == saved);
    CHECK(a.save() == saved);
    for (uint64_t off = 0; off < 4; ++off) CHECK(rd(a, off) == rd(b, off));
    CHECK(rd(b, 1) == 0x80);
    // The guest carries on: clear WAK_STS, then power off, on both.
    for (AcpiPmDevice* d : {&a, &b}) {
        wr(*d, 1, 0x80);
        CHECK(rd(*d, 1) == 0);
        wr(*d, 0, static_cast<uint8_t>(x86::kAcpiS5SleepType << 2 | kSlpEn));
    }
    CHECK(a.save() == b.save());
    CHECK(poweroffs_a == 1);
    CHECK(poweroffs_b == 1);
    CHECK(resets_a + resets_b == 0);  // restoring never acts on the callbacks

    REQUIRE(b.restore(AcpiPmDevice::State{}));
    CHECK(rd(b, 1) == 0);
}
