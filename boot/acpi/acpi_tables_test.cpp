#include "boot/acpi/acpi_tables.hpp"

#include <doctest/doctest.h>

#include <array>
#include <cstring>
#include <map>
#include <string>

#include "boot/acpi/fadt.hpp"
#include "boot/acpi/madt.hpp"
#include "boot/acpi/mcfg.hpp"
#include "boot/acpi/rsdp.hpp"
#include "boot/acpi/sdt.hpp"
#include "boot/x86_layout.hpp"

using namespace kestrel;
using namespace kestrel::acpi;

namespace {

// A by-value copy: doctest binds operands by reference, which packed fields cannot take.
template <class T>
T copy(T v) {
    return v;
}

uint8_t sum8(std::span<const uint8_t> b) {
    uint8_t s = 0;
    for (uint8_t x : b) s = static_cast<uint8_t>(s + x);
    return s;
}

template <class T>
T load(std::span<const uint8_t> b, size_t off) {
    REQUIRE(off + sizeof(T) <= b.size());
    T v;
    std::memcpy(&v, b.data() + off, sizeof v);
    return v;
}

std::map<std::string, std::vector<uint8_t>> by_name(const std::vector<AcpiBlob>& blobs) {
    std::map<std::string, std::vector<uint8_t>> m;
    for (const auto& [n, b] : blobs) m[n] = b;
    return m;
}

// Counts MADT interrupt controller structures by type, checking each length field as it goes.
std::map<uint8_t, int> madt_entry_counts(std::span<const uint8_t> madt) {
    std::map<uint8_t, int> counts;
    size_t off = sizeof(MadtFixed);
    while (off < madt.size()) {
        REQUIRE(off + 2 <= madt.size());
        const uint8_t len = madt[off + 1];
        REQUIRE(len >= 2);
        REQUIRE(off + len <= madt.size());
        ++counts[madt[off]];
        off += len;
    }
    CHECK(off == madt.size());
    return counts;
}

// What the lead passes for a VM with PCI: the fixed layout of boot/x86_layout.hpp.
PciHostConfig layout_pci() {
    return PciHostConfig{.ecam_base = x86::kPciEcamStart,
                         .bus_start = 0,
                         .bus_end = static_cast<uint8_t>((x86::kPciEcamSize >> 20) - 1),
                         .mmio32_base = x86::kPciMmio32Start,
                         .mmio32_size = x86::kPciMmio32Size};
}

AcpiConfig with_pci(uint32_t n) { return AcpiConfig{n, layout_pci()}; }

bool contains(const std::vector<uint8_t>& hay, std::string_view needle) {
    return std::string(hay.begin(), hay.end()).find(needle) != std::string::npos;
}

GuestMemory low_memory() {
    std::array specs{GuestRegionSpec{GuestAddress(0), 0x100000}};
    auto mem = GuestMemory::create(specs);
    REQUIRE(mem);
    return std::move(*mem);
}

}  // namespace

TEST_CASE("acpi: every table has a correct length and checksum") {
    for (uint32_t n : {1u, 2u, 8u, 64u, 254u})
    for (bool pci : {false, true}) {
        CAPTURE(n);
        CAPTURE(pci);
        auto blobs = build_acpi_tables(pci ? with_pci(n) : AcpiConfig{n}, x86::kAcpiStart);
        REQUIRE(blobs.size() == (pci ? 6 : 5));
        for (const auto& [name, bytes] : blobs) {
            CAPTURE(name);
            if (name == "RSDP") {
                REQUIRE(bytes.size() == 36);
                CHECK(std::memcmp(bytes.data(), "RSD PTR ", 8) == 0);
                CHECK(bytes[15] == 2);
                CHECK(load<uint32_t>(bytes, 20) == 36);
                CHECK(sum8(std::span(bytes).first(20)) == 0);
                CHECK(sum8(bytes) == 0);
                continue;
            }
            REQUIRE(bytes.size() >= sizeof(SdtHeader));
            CHECK(std::string(reinterpret_cast<const char*>(bytes.data()), 4) == name);
            CHECK(load<uint32_t>(bytes, 4) == bytes.size());
            CHECK(sum8(bytes) == 0);
            CHECK(std::memcmp(bytes.data() + 10, "KESTRL", 6) == 0);
            CHECK(std::memcmp(bytes.data() + 16, "KESTREL ", 8) == 0);
        }
    }
}

TEST_CASE("acpi: the RSDP alone would fail its checksum if one byte changed") {
    auto t = by_name(build_acpi_tables(AcpiConfig{2}, x86::kAcpiStart));
    auto rsdp = t.at("RSDP");
    rsdp[24] ^= 1;  // XSDT address
    CHECK(sum8(rsdp) != 0);
    CHECK(sum8(std::span(rsdp).first(20)) == 0);  // the 1.0 checksum does not cover it
}

TEST_CASE("acpi: MADT has one local APIC per vCPU, one IOAPIC and the IRQ0 override") {
    for (uint32_t n : {1u, 2u, 8u, 64u}) {
        CAPTURE(n);
        auto madt = by_name(build_acpi_tables(AcpiConfig{n}, x86::kAcpiStart)).at("APIC");
        CHECK(load<uint32_t>(madt, 36) == x86::kLapicAddr);
        CHECK(load<uint32_t>(madt, 40) == 0);  // no 8259 unless asked for
        AcpiConfig legacy{n};
        legacy.has_8259 = true;
        CHECK(load<uint32_t>(by_name(build_acpi_tables(legacy, x86::kAcpiStart)).at("APIC"), 40) ==
              kMadtPcatCompat);
        auto counts = madt_entry_counts(madt);
        CHECK(counts[0] == static_cast<int>(n));
        CHECK(counts[1] == 1);
        CHECK(counts[2] == 1);
        CHECK(counts[4] == 1);
        CHECK(counts.size() == 4);

        // LAPIC i: UID i, APIC id i, enabled.
        for (uint32_t i = 0; i < n; ++i) {
            auto e = load<MadtLocalApic>(madt, sizeof(MadtFixed) + i * sizeof(MadtLocalApic));
            CHECK(e.type == MadtType::kLocalApic);
            CHECK(e.acpi_processor_uid == i);
            CHECK(e.apic_id == i);
            CHECK(uint32_t{e.flags} == kLocalApicEnabled);
        }
        const size_t ioapic_off = sizeof(MadtFixed) + n * sizeof(MadtLocalApic);
        auto io = load<MadtIoApic>(madt, ioapic_off);
        CHECK(io.type == MadtType::kIoApic);
        CHECK(io.io_apic_id == n);
        CHECK(uint32_t{io.io_apic_address} == x86::kIoapicAddr);
        CHECK(uint32_t{io.global_system_interrupt_base} == 0);
        auto iso = load<MadtInterruptSourceOverride>(madt, ioapic_off + sizeof(MadtIoApic));
        CHECK(iso.type == MadtType::kInterruptSourceOverride);
        CHECK(iso.bus == 0);
        CHECK(iso.source == 0);
        CHECK(uint32_t{iso.global_system_interrupt} == x86::kTimerGsi);
        CHECK(uint16_t{iso.flags} == 0);
    }
}

TEST_CASE("acpi: FADT is HW-reduced with sleep and reset registers on our ports") {
    auto blobs = build_acpi_tables(AcpiConfig{4}, x86::kAcpiStart);
    auto addrs = acpi_table_addresses(x86::kAcpiStart, blobs);
    auto fadt_bytes = by_name(blobs).at("FACP");
    REQUIRE(fadt_bytes.size() == sizeof(Fadt));
    auto f = load<Fadt>(fadt_bytes, 0);
    CHECK(f.header.revision == 6);
    CHECK((f.flags & (1u << 20)) != 0);  // HW_REDUCED_ACPI
    CHECK((f.flags & (1u << 10)) != 0);  // RESET_REG_SUP
    CHECK((f.iapc_boot_arch & kBootArchVgaNotPresent) != 0);
    CHECK((f.iapc_boot_arch & kBootArch8042) != 0);  // the i8042, also \_SB.KBD
    CHECK((f.iapc_boot_arch & kBootArchMsiNotSupported) == 0);
    CHECK((f.iapc_boot_arch & kBootArchCmosRtcNotPresent) == 0);  // the RTC is there
    CHECK(f.century == 0x32);
    CHECK(copy(f.firmware_ctrl) == 0);
    CHECK(copy(f.x_firmware_ctrl) == 0);
    CHECK(copy(f.dsdt) == 0);
    CHECK(copy(f.x_dsdt) == addrs[4]);
    CHECK(blobs[4].first == "DSDT");

    Gas sleep_ctl = f.sleep_control_reg, sleep_sts = f.sleep_status_reg, reset = f.reset_reg;
    CHECK(copy(sleep_ctl.address_space_id) == 1);
    CHECK(copy(sleep_ctl.register_bit_width) == 8);
    CHECK(copy(sleep_ctl.register_bit_offset) == 0);
    CHECK(copy(sleep_ctl.address) == x86::kAcpiSleepControlPort);
    CHECK(copy(sleep_sts.address_space_id) == 1);
    CHECK(copy(sleep_sts.register_bit_width) == 8);
    CHECK(copy(sleep_sts.address) == x86::kAcpiSleepStatusPort);
    CHECK(copy(reset.address_space_id) == 1);
    CHECK(copy(reset.register_bit_width) == 8);
    CHECK(copy(reset.address) == x86::kAcpiResetPort);
    CHECK(f.reset_value == x86::kAcpiResetValue);
}

TEST_CASE("acpi: DSDT AML carries _S5_ with the sleep type and the COM1 device") {
    auto dsdt = by_name(build_acpi_tables(AcpiConfig{1}, x86::kAcpiStart)).at("DSDT");
    std::string s(dsdt.begin(), dsdt.end());
    // Name(_S5_, Package(4){5, 5, 0, 0})
    const std::string s5{'\x08', '_', 'S', '5', '_', '\x12', '\x08', '\x04',
                         '\x0a', static_cast<char>(x86::kAcpiS5SleepType),
                         '\x0a', static_cast<char>(x86::kAcpiS5SleepType), '\x00', '\x00'};
    CHECK(s.find(s5) == 36);
    CHECK(s.find("COM1") != std::string::npos);
    CHECK(s.find("\x0c\x41\xd0\x05\x01") != std::string::npos);  // EisaId("PNP0501")
    // Device(RTC): EisaId("PNP0B00"), IO(Decode16, 0x70, 0x70, 1, 2), no IRQ, end tag
    CHECK(s.find("RTC_") != std::string::npos);
    CHECK(s.find(std::string("\x0c\x41\xd0\x0b\x00", 5)) != std::string::npos);
    CHECK(s.find(std::string("\x47\x01\x70\x00\x70\x00\x01\x02\x79\x00", 10)) !=
          std::string::npos);
    // Device(KBD): EisaId("PNP0303"); IO 0x60 then IO 0x64 (data, command: Linux takes them in
    // that order), IRQNoFlags(){1}, end tag.
    CHECK(s.find("KBD_") != std::string::npos);
    CHECK(s.find(std::string("\x0c\x41\xd0\x03\x03", 5)) != std::string::npos);
    CHECK(s.find(std::string("\x47\x01\x60\x00\x60\x00\x01\x01"
                             "\x47\x01\x64\x00\x64\x00\x01\x01"
                             "\x22\x02\x00\x79\x00", 21)) != std::string::npos);
}

TEST_CASE("acpi: without pci only the RTC is new; pci changes XSDT and DSDT and adds MCFG") {
    for (uint32_t n : {1u, 8u, 254u}) {
        CAPTURE(n);
        auto plain = build_acpi_tables(AcpiConfig{n}, x86::kAcpiStart);
        auto pci = build_acpi_tables(with_pci(n), x86::kAcpiStart);
        REQUIRE(plain.size() == 5);
        REQUIRE(pci.size() == 6);
        const std::vector<std::string> order{"RSDP", "XSDT", "FACP", "APIC", "DSDT", "MCFG"};
        for (size_t i = 0; i < plain.size(); ++i) CHECK(plain[i].first == order[i]);
        for (size_t i = 0; i < pci.size(); ++i) CHECK(pci[i].first == order[i]);

        const auto& plain_dsdt = plain[4].second;
        CHECK_FALSE(contains(plain_dsdt, "PCI0"));
        CHECK_FALSE(contains(plain_dsdt, "ECAM"));
        CHECK_FALSE(contains(plain_dsdt, std::string("\x41\xd0\x0a\x08", 4)));  // PNP0A08
        CHECK_FALSE(contains(plain_dsdt, std::string("\x41\xd0\x0c\x02", 4)));  // PNP0C02
        CHECK(contains(plain_dsdt, "RTC_"));
        CHECK(load<uint32_t>(plain[1].second, 4) == 36 + 2 * 8);

        // MCFG goes last, so the tables before the DSDT keep their bytes and addresses.
        CHECK(pci[0].second == plain[0].second);  // RSDP -> same XSDT address
        CHECK(pci[2].second == plain[2].second);  // FADT -> same DSDT address
        CHECK(pci[3].second == plain[3].second);  // MADT
        CHECK(load<uint32_t>(pci[1].second, 4) == 36 + 3 * 8);
        CHECK(contains(pci[4].second, "PCI0"));
        CHECK(contains(pci[4].second, "ECAM"));
        CHECK(contains(pci[4].second, std::string("\x41\xd0\x0a\x08", 4)));
        CHECK(contains(pci[4].second, std::string("\x41\xd0\x0a\x03", 4)));  // PNP0A03
        CHECK(contains(pci[4].second, std::string("\x41\xd0\x0c\x02", 4)));
    }
}

TEST_CASE("acpi: MCFG has one allocation for segment 0 at the ECAM base") {
    auto blobs = build_acpi_tables(with_pci(2), x86::kAcpiStart);
    REQUIRE(blobs.size() == 6);
    const auto& mcfg = blobs[5].second;
    REQUIRE(blobs[5].first == "MCFG");
    REQUIRE(mcfg.size() == sizeof(McfgFixed) + sizeof(McfgAllocation));
    CHECK(mcfg.size() == 60);
    CHECK(load<uint32_t>(mcfg, 4) == 60);
    CHECK(mcfg[8] == 1);  // revision
    CHECK(sum8(mcfg) == 0);
    CHECK(load<uint64_t>(mcfg, 36) == 0);  // reserved
    auto a = load<McfgAllocation>(mcfg, sizeof(McfgFixed));
    CHECK(copy(a.base_address) == x86::kPciEcamStart);
    CHECK(copy(a.segment) == 0);
    CHECK(a.start_bus == 0);
    CHECK(a.end_bus == 0);  // kPciEcamSize is one bus
    CHECK(copy(a.reserved) == 0);

    PciHostConfig wide = layout_pci();
    wide.bus_start = 1;
    wide.bus_end = 15;
    auto wide_blobs = build_acpi_tables(AcpiConfig{1, wide}, x86::kAcpiStart);
    REQUIRE(wide_blobs.size() == 6);
    auto w = load<McfgAllocation>(wide_blobs[5].second, sizeof(McfgFixed));
    CHECK(copy(w.base_address) == x86::kPciEcamStart);  // bus 0's address even when bus 0 is absent
    CHECK(w.start_bus == 1);
    CHECK(w.end_bus == 15);
}

TEST_CASE("acpi: DSDT PCI0 and ECAM resources carry the configured windows") {
    auto dsdt = by_name(build_acpi_tables(with_pci(1), x86::kAcpiStart)).at("DSDT");
    const std::string bus{'\x88', '\x0d', '\x00', '\x02', '\x0c', '\x00', 0, 0, 0, 0,
                          0,       0,       0,       0,       1,       0};
    const std::string io_low{'\x88', '\x0d', '\x00', '\x01', '\x0c', '\x03', 0, 0, 0, 0,
                             '\xf7', '\x0c', 0,       0,       '\xf8', '\x0c'};
    const std::string io_high{'\x88', '\x0d', '\x00', '\x01', '\x0c', '\x03', 0, 0, 0, '\x0d',
                              '\xff', '\xff', 0,       0,       0,       '\xf3'};
    const std::string mmio32{'\x87', '\x17', '\x00', '\x00', '\x0c', '\x01', 0, 0, 0, 0,
                             0,       0,       0,       '\xc0', '\xff', '\xff', '\xff', '\xdf',
                             0,       0,       0,       0,       0,       0,       0,       '\x20'};
    const std::string ecam{'\x86', '\x09', '\x00', '\x01', 0, 0, 0, '\xe0', 0, 0, '\x10', 0};
    CHECK(contains(dsdt, bus + io_low + io_high + mmio32 + "\x79"));
    CHECK(contains(dsdt, ecam + "\x79"));
}

TEST_CASE("acpi: bad PCI descriptions are errors") {
    auto bad = [](auto edit) {
        PciHostConfig pci = layout_pci();
        edit(pci);
        return AcpiConfig{1, pci};
    };
    CHECK(validate(with_pci(1)));
    CHECK_FALSE(validate(bad([](PciHostConfig& p) { p.bus_start = 2, p.bus_end = 1; })));
    CHECK_FALSE(validate(bad([](PciHostConfig& p) { p.ecam_base += 0x1000; })));
    CHECK_FALSE(validate(bad([](PciHostConfig& p) { p.ecam_base = 0xfff0'0000, p.bus_end = 1; })));
    CHECK_FALSE(validate(bad([](PciHostConfig& p) { p.ecam_base = ~uint64_t{0} << 20; })));
    CHECK_FALSE(validate(bad([](PciHostConfig& p) { p.mmio32_size = 0; })));
    CHECK_FALSE(validate(bad([](PciHostConfig& p) { p.mmio32_base = 0xffff'0000; })));
    CHECK_FALSE(validate(bad([](PciHostConfig& p) { p.mmio32_size = ~uint64_t{0}; })));
    CHECK_FALSE(validate(bad([](PciHostConfig& p) { p.mmio32_size += 0x1000; })));  // into ECAM
    CHECK_FALSE(validate(bad([](PciHostConfig& p) {
        p.mmio32_base = 0xf000'0000, p.mmio32_size = 0x1000'0000;  // covers the APICs
    })));
    GuestMemory mem = low_memory();
    CHECK_FALSE(write_acpi_tables(mem, bad([](PciHostConfig& p) { p.mmio32_size = 0; })));
    CHECK(build_acpi_tables(bad([](PciHostConfig& p) { p.bus_start = 3, p.bus_end = 2; }),
                            x86::kAcpiStart)
              .empty());
}

TEST_CASE("acpi: write_acpi_tables places the RSDP and XSDT entries resolve in guest memory") {
    for (uint32_t n : {1u, 2u, 8u, 64u, 254u})
    for (bool pci : {false, true}) {
        CAPTURE(n);
        CAPTURE(pci);
        const size_t entries = pci ? 3 : 2;
        GuestMemory mem = low_memory();
        REQUIRE(mem.fill(GuestAddress(x86::kAcpiStart), 0x100, 0xa5));  // stale junk
        auto rsdp_at = write_acpi_tables(mem, pci ? with_pci(n) : AcpiConfig{n});
        REQUIRE_MESSAGE(rsdp_at, (rsdp_at ? "" : rsdp_at.error().what()));
        CHECK(rsdp_at->raw == x86::kAcpiStart);
        CHECK(rsdp_at->raw % 16 == 0);
        CHECK(rsdp_at->raw >= 0xe0000);

        auto rsdp = mem.read_obj<Rsdp>(*rsdp_at);
        REQUIRE(rsdp);
        CHECK(std::memcmp(rsdp->signature, "RSD PTR ", 8) == 0);
        auto xsdt_hdr = mem.read_obj<SdtHeader>(GuestAddress(rsdp->xsdt_address));
        REQUIRE(xsdt_hdr);
        CHECK(std::memcmp(xsdt_hdr->signature, "XSDT", 4) == 0);
        auto xsdt = mem.slice(GuestAddress(rsdp->xsdt_address), xsdt_hdr->length);
        REQUIRE(xsdt);
        CHECK(sum8(*xsdt) == 0);
        REQUIRE(copy(xsdt_hdr->length) == 36 + entries * 8);

        std::vector<std::string> sigs;
        uint64_t fadt_at = 0;
        for (size_t i = 0; i < entries; ++i) {
            const uint64_t a = load<uint64_t>(*xsdt, 36 + 8 * i);
            CHECK(a >= x86::kAcpiStart);
            CHECK(a < x86::kAcpiEnd);
            auto h = mem.read_obj<SdtHeader>(GuestAddress(a));
            REQUIRE(h);
            auto table = mem.slice(GuestAddress(a), h->length);
            REQUIRE(table);
            CHECK(sum8(*table) == 0);
            sigs.emplace_back(h->signature, 4);
            if (sigs.back() == "FACP") fadt_at = a;
        }
        if (pci)
            CHECK(sigs == std::vector<std::string>{"FACP", "APIC", "MCFG"});
        else
            CHECK(sigs == std::vector<std::string>{"FACP", "APIC"});

        auto fadt = mem.read_obj<Fadt>(GuestAddress(fadt_at));
        REQUIRE(fadt);
        auto dsdt = mem.read_obj<SdtHeader>(GuestAddress(fadt->x_dsdt));
        REQUIRE(dsdt);
        CHECK(std::memcmp(dsdt->signature, "DSDT", 4) == 0);
        CHECK(fadt->x_dsdt + dsdt->length <= x86::kAcpiEnd);
    }
}

TEST_CASE("acpi: bad configurations are errors, not overflows") {
    GuestMemory mem = low_memory();
    CHECK_FALSE(write_acpi_tables(mem, AcpiConfig{0}));
    CHECK_FALSE(write_acpi_tables(mem, AcpiConfig{255}));
    CHECK_FALSE(write_acpi_tables(mem, AcpiConfig{100000}));
    CHECK(build_acpi_tables(AcpiConfig{0}, x86::kAcpiStart).empty());
    CHECK(build_acpi_tables(AcpiConfig{255}, x86::kAcpiStart).empty());
    CHECK(build_acpi_tables(AcpiConfig{1}, x86::kAcpiStart + 8).empty());  // RSDP misaligned

    // Guest memory that does not reach the ACPI window.
    std::array small{GuestRegionSpec{GuestAddress(0), 0x10000}};
    auto tiny = GuestMemory::create(small);
    REQUIRE(tiny);
    auto r = write_acpi_tables(*tiny, AcpiConfig{1});
    CHECK_FALSE(r);
}

TEST_CASE("acpi: table addresses are aligned and do not overlap") {
    auto blobs = build_acpi_tables(with_pci(254), x86::kAcpiStart);
    REQUIRE(blobs.size() == 6);
    auto at = acpi_table_addresses(x86::kAcpiStart, blobs);
    REQUIRE(at.size() == blobs.size() + 1);
    for (size_t i = 0; i < blobs.size(); ++i) {
        CHECK(at[i] % kAcpiTableAlign == 0);
        CHECK(at[i] + blobs[i].second.size() <= at[i + 1]);
    }
    CHECK(at.back() <= x86::kAcpiEnd);
}
