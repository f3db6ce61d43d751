#include "devices/pci/pci_config_space.hpp"

#include <doctest/doctest.h>

using namespace kestrel;

namespace {
PciIdentity test_identity() {
    return {.vendor_id = 0x1234, .device_id = 0x5678, .revision_id = 3, .base_class = 0x02,
            .subclass = 0x00, .prog_if = 0x00, .subsystem_vendor_id = 0x1af4, .subsystem_id = 0x41};
}
uint32_t read32(const PciConfigSpace& c, uint16_t off) {
    uint8_t b[4];
    c.read(off, b);
    return uint32_t{b[0]} | uint32_t{b[1]} << 8 | uint32_t{b[2]} << 16 | uint32_t{b[3]} << 24;
}
void write32(PciConfigSpace& c, uint16_t off, uint32_t v) {
    uint8_t b[4] = {uint8_t(v), uint8_t(v >> 8), uint8_t(v >> 16), uint8_t(v >> 24)};
    c.write(off, b);
}
}  // namespace

TEST_CASE("pci config space: identity registers are read-only") {
    PciConfigSpace c(test_identity());
    CHECK(read32(c, 0x00) == 0x5678'1234);
    CHECK(read32(c, 0x08) == 0x0200'0003);
    CHECK(read32(c, 0x2c) == 0x0041'1af4);
    write32(c, 0x00, 0xdeadbeef);
    write32(c, 0x08, 0xffffffff);
    write32(c, 0x2c, 0);
    CHECK(read32(c, 0x00) == 0x5678'1234);
    CHECK(read32(c, 0x08) == 0x0200'0003);
    CHECK(read32(c, 0x2c) == 0x0041'1af4);
    CHECK(c.u8(pci_reg::kHeaderType) == 0);
    CHECK(c.u8(pci_reg::kInterruptPin) == 0);
}

TEST_CASE("pci config space: only implemented command bits stick; interrupt line is scratch") {
    PciConfigSpace c(test_identity());
    write32(c, 0x04, 0xffff'ffff);  // also hits status: read-only here
    CHECK(c.u16(pci_reg::kCommand) == (pci_reg::kCommandMemorySpace | pci_reg::kCommandBusMaster |
                                       pci_reg::kCommandIntxDisable));
    CHECK(c.u16(pci_reg::kStatus) == 0);
    CHECK(c.memory_enabled());
    uint8_t line = 11;
    c.write(pci_reg::kInterruptLine, std::span(&line, 1));
    CHECK(c.u8(pci_reg::kInterruptLine) == 11);
    write32(c, pci_reg::kExpansionRom, 0xffffffff);  // no ROM: stays 0
    CHECK(read32(c, pci_reg::kExpansionRom) == 0);
}

TEST_CASE("pci config space: 32-bit BAR sizing protocol") {
    PciConfigSpace c(test_identity());
    REQUIRE(c.add_memory_bar({.index = 2, .size = 0x1000, .is_64bit = false, .prefetchable = true}));
    write32(c, 0x18, 0xffffffff);
    CHECK(read32(c, 0x18) == (0xfffff000u | pci_reg::kBarPrefetchable));
    write32(c, 0x18, 0xc000'1234);
    CHECK(read32(c, 0x18) == (0xc000'1000u | pci_reg::kBarPrefetchable));
    CHECK(c.bar_address(2) == 0xc000'1000);
    // Unimplemented BARs read 0 whatever is written.
    write32(c, 0x10, 0xffffffff);
    CHECK(read32(c, 0x10) == 0);
}

TEST_CASE("pci config space: 64-bit BAR takes two registers and sizes both halves") {
    PciConfigSpace c(test_identity());
    REQUIRE(c.add_memory_bar({.index = 0, .size = 0x8000, .is_64bit = true}));
    CHECK(read32(c, 0x10) == pci_reg::kBarMemType64);
    write32(c, 0x10, 0xffffffff);
    write32(c, 0x14, 0xffffffff);
    CHECK(read32(c, 0x10) == (0xffff8000u | pci_reg::kBarMemType64));
    CHECK(read32(c, 0x14) == 0xffffffff);
    write32(c, 0x10, 0xe000'0000);
    write32(c, 0x14, 0x1);
    CHECK(c.bar_address(0) == 0x1'e000'0000);
    c.set_bar_address(0, 0xc000'8000);
    CHECK(read32(c, 0x10) == (0xc000'8000u | pci_reg::kBarMemType64));
    CHECK(read32(c, 0x14) == 0);
    // BAR1 is the upper half: a second BAR there is refused.
    CHECK_FALSE(c.add_memory_bar({.index = 1, .size = 0x1000}));
    CHECK_FALSE(c.add_memory_bar({.index = 5, .size = 0x1000, .is_64bit = true}));
    CHECK_FALSE(c.add_memory_bar({.index = 3, .size = 0x1800}));
    CHECK_FALSE(c.add_memory_bar({.index = 3, .size = 8}));
}

TEST_CASE("pci config space: capability list links in order, writable masks apply") {
    PciConfigSpace c(test_identity());
    CHECK((c.u16(pci_reg::kStatus) & pci_reg::kStatusCapabilitiesList) == 0);
    const uint8_t a_body[] = {1, 2, 3};
    const uint8_t b_body[] = {9, 9, 9, 9, 9, 9};
    const uint8_t b_mask[] = {0, 0xff, 0, 0, 0, 0x0f};
    auto a = c.add_capability(0x09, a_body);
    auto b = c.add_capability(0x11, b_body, b_mask);
    REQUIRE(a);
    REQUIRE(b);
    CHECK(*a == 0x40);
    CHECK(*b == 0x48);  // 5 bytes rounded up to a dword
    CHECK((c.u16(pci_reg::kStatus) & pci_reg::kStatusCapabilitiesList) != 0);
    CHECK(c.u8(pci_reg::kCapabilitiesPointer) == 0x40);
    CHECK(c.u8(0x40) == 0x09);
    CHECK(c.u8(0x41) == 0x48);
    CHECK(c.u8(0x42) == 1);
    CHECK(c.u8(0x48) == 0x11);
    CHECK(c.u8(0x49) == 0);  // end of list
    const uint8_t junk[8] = {0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa};
    c.write(0x48, junk);
    CHECK(c.u8(0x48) == 0x11);
    CHECK(c.u8(0x49) == 0);
    CHECK(c.u8(0x4a) == 9);
    CHECK(c.u8(0x4b) == 0xaa);
    CHECK(c.u8(0x4f) == 0x0a);
    const uint8_t bad_mask[] = {0};
    CHECK_FALSE(c.add_capability(0x05, b_body, bad_mask));
    std::vector<uint8_t> huge(250);
    CHECK_FALSE(c.add_capability(0x05, huge));
}

TEST_CASE("pci config space: accesses past the end are harmless") {
    PciConfigSpace c(test_identity());
    uint8_t b[4] = {0, 0, 0, 0};
    c.read(PciConfigSpace::kSize - 2, b);
    CHECK(b[2] == 0xff);
    CHECK(b[3] == 0xff);
    c.write(PciConfigSpace::kSize - 1, b);
    uint8_t ext[4];
    c.read(0x100, ext);
    CHECK(ext[0] == 0);  // conventional function: extended space is zero
}

TEST_CASE("pci config space: a saved image restores; read-only bits that differ are refused") {
    PciConfigSpace a(test_identity());
    REQUIRE(a.add_memory_bar({.index = 0, .size = 0x4000, .is_64bit = true, .prefetchable = false}));
    const uint8_t body[4] = {1, 2, 3, 4}, writable[4] = {0, 0xff, 0, 0};
    REQUIRE(a.add_capability(0x09, body, writable));
    a.set_bar_address(0, 0xc000'0000);
    const uint16_t cmd = pci_reg::kCommandMemorySpace;
    a.write(pci_reg::kCommand, std::span(reinterpret_cast<const uint8_t*>(&cmd), 2));
    a.set_u8(0x40 + 3, 0x77);  // the capability's writable byte
    std::vector<uint8_t> image(a.image().begin(), a.image().end());

    PciConfigSpace b(test_identity());
    REQUIRE(b.add_memory_bar({.index = 0, .size = 0x4000, .is_64bit = true, .prefetchable = false}));
    REQUIRE(b.add_capability(0x09, body, writable));
    REQUIRE(b.restore(image));
    CHECK(b.bar_address(0) == 0xc000'0000);
    CHECK(b.memory_enabled());
    CHECK(b.u8(0x40 + 3) == 0x77);

    PciConfigSpace c(test_identity());
    REQUIRE(c.add_memory_bar({.index = 0, .size = 0x4000, .is_64bit = true, .prefetchable = false}));
    REQUIRE(c.add_capability(0x09, body, writable));
    auto bad = image;
    bad[0x40 + 2] ^= 1;  // a read-only capability byte
    auto r = c.restore(bad);
    REQUIRE_FALSE(r);
    CHECK(r.error().message.find("byte 0x42") != std::string::npos);
    bad = image;
    bad[pci_reg::kBar0] |= 0x3;  // address bits below the BAR's size are read-only
    CHECK_FALSE(c.restore(bad));
    CHECK_FALSE(c.restore(std::span(image).first(256)));
    CHECK(c.bar_address(0) == 0);  // refused: unchanged
}
