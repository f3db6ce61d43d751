#include "devices/pci/pci_root.hpp"

#include <cstring>
#include <map>
#include <mutex>

#include <doctest/doctest.h>

#include "devices/pci/pci_config_space.hpp"

using namespace kestrel;

namespace {

constexpr uint64_t kWindowBase = 0xc000'0000;
constexpr uint64_t kWindowSize = 0x2000'0000;

// A function with a 64-bit BAR0 (16 KiB) and a 32-bit BAR2 (4 KiB) backed by plain memory.
class FakeDevice final : public PciDevice {
public:
    FakeDevice()
        : config_(PciIdentity{.vendor_id = 0x1234, .device_id = 0xabcd, .base_class = 0xff}) {
        (void)config_.add_memory_bar({.index = 0, .size = 0x4000, .is_64bit = true});
        (void)config_.add_memory_bar({.index = 2, .size = 0x1000});
    }
    void config_read(uint16_t offset, std::span<uint8_t> data) override {
        std::lock_guard l(m_);
        config_.read(offset, data);
    }
    void config_write(uint16_t offset, std::span<const uint8_t> data) override {
        std::lock_guard l(m_);
        config_.write(offset, data);
    }
    std::vector<PciBarSpec> bar_specs() const override { return config_.bars(); }
    void bar_read(uint8_t bar, uint64_t offset, std::span<uint8_t> data) override {
        std::lock_guard l(m_);
        auto& mem = bar == 0 ? bar0 : bar2;
        REQUIRE(offset + data.size() <= mem.size());
        std::memcpy(data.data(), mem.data() + offset, data.size());
    }
    void bar_write(uint8_t bar, uint64_t offset, std::span<const uint8_t> data) override {
        std::lock_guard l(m_);
        auto& mem = bar == 0 ? bar0 : bar2;
        REQUIRE(offset + data.size() <= mem.size());
        std::memcpy(mem.data() + offset, data.data(), data.size());
    }
    std::vector<uint8_t> bar0 = std::vector<uint8_t>(0x4000), bar2 = std::vector<uint8_t>(0x1000);

private:
    std::mutex m_;
    PciConfigSpace config_;
};

uint32_t io_read(BusDevice& io, uint64_t port_off, size_t len) {
    uint8_t b[4] = {0, 0, 0, 0};
    io.read(port_off, std::span(b, len));
    uint32_t v = 0;
    std::memcpy(&v, b, len);
    return v;
}
void io_write(BusDevice& io, uint64_t port_off, uint32_t v, size_t len) {
    io.write(port_off, std::span(reinterpret_cast<const uint8_t*>(&v), len));
}
uint32_t address(uint8_t bus, uint8_t dev, uint8_t fn, uint8_t reg) {
    return 0x8000'0000u | uint32_t{bus} << 16 | uint32_t{dev} << 11 | uint32_t{fn} << 8 | reg;
}
// A config read through 0xcf8/0xcfc the way Linux's pci_conf1_read does it.
uint32_t conf1_read(BusDevice& io, uint8_t dev, uint16_t reg, size_t len, uint8_t bus = 0,
                    uint8_t fn = 0) {
    io_write(io, 0, address(bus, dev, fn, static_cast<uint8_t>(reg & 0xfc)), 4);
    return io_read(io, 4 + (reg & 3), len);
}
void conf1_write(BusDevice& io, uint8_t dev, uint16_t reg, uint32_t v, size_t len) {
    io_write(io, 0, address(0, dev, 0, static_cast<uint8_t>(reg & 0xfc)), 4);
    io_write(io, 4 + (reg & 3), v, len);
}
uint32_t ecam_read(BusDevice& ecam, uint8_t bus, uint8_t dev, uint8_t fn, uint16_t reg, size_t len) {
    uint64_t off = uint64_t{bus} << 20 | uint64_t{dev} << 15 | uint64_t{fn} << 12 | reg;
    return io_read(ecam, off, len);
}
uint32_t mmio_read32(PciRoot& root, uint64_t addr) {
    uint32_t v = 0;
    root.mmio_read(addr, std::span(reinterpret_cast<uint8_t*>(&v), 4));
    return v;
}
void mmio_write32(PciRoot& root, uint64_t addr, uint32_t v) {
    root.mmio_write(addr, std::span(reinterpret_cast<const uint8_t*>(&v), 4));
}

}  // namespace

TEST_CASE("pci root: config mechanism #1 reaches the host bridge") {
    auto root = PciRoot::create({kWindowBase, kWindowSize});
    auto io = root->config_io();
    // CONFIG_ADDRESS reads back with reserved bits clear (Linux's pci_check_type1 relies on it).
    io_write(*io, 0, 0x8000'0000, 4);
    CHECK(io_read(*io, 0, 4) == 0x8000'0000);
    io_write(*io, 0, 0xff00'0003, 4);
    CHECK(io_read(*io, 0, 4) == 0x8000'0000);

    CHECK(conf1_read(*io, 0, 0x00, 4) == 0x0d57'8086);
    CHECK(conf1_read(*io, 0, 0x02, 2) == 0x0d57);
    CHECK(conf1_read(*io, 0, 0x03, 1) == 0x0d);
    CHECK(conf1_read(*io, 0, 0x00, 1) == 0x86);
    CHECK(conf1_read(*io, 0, 0x0b, 1) == 0x06);  // bridge
    CHECK((conf1_read(*io, 0, 0x08, 4) >> 8) == 0x060000);
    CHECK(conf1_read(*io, 0, 0x0e, 1) == 0x00);  // header type 0, single function

    // Enable bit clear: no cycle, all ones.
    io_write(*io, 0, 0x0000'0000, 4);
    CHECK(io_read(*io, 4, 4) == 0xffff'ffff);
    // Byte/word writes to 0xcf8 are not CONFIG_ADDRESS (pci_check_type1 pokes 0xcfb).
    io_write(*io, 0, address(0, 0, 0, 0), 4);
    io_write(*io, 3, 0x01, 1);
    CHECK(io_read(*io, 0, 4) == address(0, 0, 0, 0));
    CHECK(io_read(*io, 0, 2) == 0xffff);
    // A data access spilling past 0xcff is dropped.
    CHECK(io_read(*io, 7, 2) == 0xffff);
}

TEST_CASE("pci root: absent devices, functions and buses read all ones") {
    auto root = PciRoot::create({kWindowBase, kWindowSize});
    auto io = root->config_io();
    REQUIRE(root->add_device(std::make_shared<FakeDevice>()) == uint8_t{1});
    CHECK(conf1_read(*io, 5, 0, 4) == 0xffff'ffff);
    CHECK(conf1_read(*io, 31, 0, 2) == 0xffff);
    CHECK(conf1_read(*io, 1, 0, 4, 0, 1) == 0xffff'ffff);  // function 1
    CHECK(conf1_read(*io, 1, 0, 4, 1, 0) == 0xffff'ffff);  // bus 1
    CHECK(conf1_read(*io, 1, 0, 4) == 0xabcd'1234);
    conf1_write(*io, 5, 0x04, 0xffff, 2);  // harmless
    CHECK(conf1_read(*io, 5, 0x04, 2) == 0xffff);
}

TEST_CASE("pci root: ECAM and 0xcf8 see the same registers") {
    auto root = PciRoot::create({kWindowBase, kWindowSize});
    REQUIRE(root->add_device(std::make_shared<FakeDevice>()));
    auto io = root->config_io();
    auto ecam = root->ecam();
    for (uint8_t dev : {0, 1, 2})
        for (uint16_t reg = 0; reg < 0x40; reg += 4) {
            CAPTURE(dev);
            CAPTURE(reg);
            CHECK(conf1_read(*io, dev, reg, 4) == ecam_read(*ecam, 0, dev, 0, reg, 4));
            CHECK(conf1_read(*io, dev, reg + 2, 2) == ecam_read(*ecam, 0, dev, 0, reg + 2, 2));
            CHECK(conf1_read(*io, dev, reg + 1, 1) == ecam_read(*ecam, 0, dev, 0, reg + 1, 1));
        }
    CHECK(ecam_read(*ecam, 1, 1, 0, 0, 4) == 0xffff'ffff);
    CHECK(ecam_read(*ecam, 0, 1, 3, 0, 4) == 0xffff'ffff);
    CHECK(ecam_read(*ecam, 0, 1, 0, 0x100, 4) == 0);      // extended space of a PCI function
    CHECK(ecam_read(*ecam, 0, 1, 0, 0x2, 4) == 0xffff'ffff);  // crosses a dword
    uint8_t eight[8];
    ecam->read(uint64_t{1} << 15, eight);
    CHECK(eight[0] == 0xff);
    // Writes through ECAM land in the same register.
    uint16_t cmd = 0;
    ecam->write(uint64_t{1} << 15 | 4, std::span(reinterpret_cast<const uint8_t*>(&cmd), 2));
    CHECK(conf1_read(*io, 1, 4, 2) == 0);
}

TEST_CASE("pci root: BARs are placed naturally aligned in the window and decode") {
    auto root = PciRoot::create({kWindowBase, kWindowSize});
    auto a = std::make_shared<FakeDevice>();
    auto b = std::make_shared<FakeDevice>();
    REQUIRE(root->add_device(a) == uint8_t{1});
    REQUIRE(root->add_device(b) == uint8_t{2});
    auto io = root->config_io();
    for (uint8_t slot : {1, 2}) {
        auto bar0 = root->bar_address(slot, 0);
        auto bar2 = root->bar_address(slot, 2);
        REQUIRE(bar0);
        REQUIRE(bar2);
        CHECK(*bar0 % 0x4000 == 0);
        CHECK(*bar2 % 0x1000 == 0);
        CHECK(*bar0 >= kWindowBase);
        CHECK(*bar2 + 0x1000 <= kWindowBase + kWindowSize);
        CHECK((conf1_read(*io, slot, 0x04, 2) & pci_reg::kCommandMemorySpace) != 0);
        CHECK((conf1_read(*io, slot, 0x10, 4) & ~0xfu) == static_cast<uint32_t>(*bar0));
        CHECK(conf1_read(*io, slot, 0x14, 4) == 0);
    }
    CHECK(*root->bar_address(1, 0) != *root->bar_address(2, 0));
    CHECK_FALSE(root->bar_address(1, 1));
    mmio_write32(*root, *root->bar_address(1, 2) + 8, 0x1122'3344);
    mmio_write32(*root, *root->bar_address(2, 0) + 0x3ffc, 0x5566'7788);
    uint32_t v;
    std::memcpy(&v, a->bar2.data() + 8, 4);
    CHECK(v == 0x1122'3344);
    std::memcpy(&v, b->bar0.data() + 0x3ffc, 4);
    CHECK(v == 0x5566'7788);
    CHECK(mmio_read32(*root, *root->bar_address(2, 0) + 0x3ffc) == 0x5566'7788);
    // Straddling a BAR's end or hitting nothing: all ones, no device access.
    CHECK(mmio_read32(*root, *root->bar_address(2, 0) + 0x3ffe) == 0xffff'ffff);
    CHECK(mmio_read32(*root, kWindowBase + kWindowSize - 4) == 0xffff'ffff);
    // The mmio() bus device takes offsets relative to the window.
    uint32_t via_bus = 0;
    root->mmio()->read(*root->bar_address(2, 0) + 0x3ffc - kWindowBase,
                       std::span(reinterpret_cast<uint8_t*>(&via_bus), 4));
    CHECK(via_bus == 0x5566'7788);
}

TEST_CASE("pci root: BAR sizing through config cycles") {
    auto root = PciRoot::create({kWindowBase, kWindowSize});
    REQUIRE(root->add_device(std::make_shared<FakeDevice>()));
    auto io = root->config_io();
    uint32_t lo = conf1_read(*io, 1, 0x10, 4), hi = conf1_read(*io, 1, 0x14, 4);
    conf1_write(*io, 1, 0x04, 0, 2);  // decode off while sizing, like Linux
    conf1_write(*io, 1, 0x10, 0xffff'ffff, 4);
    conf1_write(*io, 1, 0x14, 0xffff'ffff, 4);
    CHECK(conf1_read(*io, 1, 0x10, 4) == 0xffff'c004);  // 16 KiB, 64-bit memory
    CHECK(conf1_read(*io, 1, 0x14, 4) == 0xffff'ffff);
    conf1_write(*io, 1, 0x18, 0xffff'ffff, 4);
    CHECK(conf1_read(*io, 1, 0x18, 4) == 0xffff'f000);  // 4 KiB, 32-bit
    conf1_write(*io, 1, 0x10, lo, 4);
    conf1_write(*io, 1, 0x14, hi, 4);
    CHECK(conf1_read(*io, 1, 0x10, 4) == lo);
    CHECK(conf1_read(*io, 1, 0x1c, 4) == 0);  // BAR3 unimplemented
}

TEST_CASE("pci root: relocation, memory-enable gate and the change callback") {
    auto root = PciRoot::create({kWindowBase, kWindowSize});
    std::vector<PciBarChange> changes;
    root->set_bar_change_callback([&](const PciBarChange& c) { changes.push_back(c); });
    auto dev = std::make_shared<FakeDevice>();
    REQUIRE(root->add_device(dev) == uint8_t{1});
    CHECK(changes.size() == 2);  // both BARs started decoding at registration
    changes.clear();
    auto io = root->config_io();
    uint64_t old2 = *root->bar_address(1, 2);
    uint64_t new2 = kWindowBase + 0x10'0000;
    dev->bar2[0] = 0x5a;

    conf1_write(*io, 1, 0x18, static_cast<uint32_t>(new2), 4);
    REQUIRE(changes.size() == 1);
    CHECK(changes[0].slot == 1);
    CHECK(changes[0].bar == 2);
    CHECK(changes[0].size == 0x1000);
    CHECK(changes[0].old_address == old2);
    CHECK(changes[0].new_address == new2);
    CHECK((mmio_read32(*root, new2) & 0xff) == 0x5a);
    CHECK(mmio_read32(*root, old2) == 0xffff'ffff);

    // Memory space enable off: nothing decodes, writes are dropped.
    conf1_write(*io, 1, 0x04, 0, 2);
    CHECK(changes.size() == 3);
    CHECK_FALSE(changes.back().new_address);
    CHECK(mmio_read32(*root, new2) == 0xffff'ffff);
    mmio_write32(*root, new2, 0);
    CHECK(dev->bar2[0] == 0x5a);
    conf1_write(*io, 1, 0x04, pci_reg::kCommandMemorySpace, 2);
    CHECK(changes.size() == 5);
    CHECK(changes.back().new_address.has_value());
    CHECK((mmio_read32(*root, new2) & 0xff) == 0x5a);

    // A BAR moved outside the window cannot be reached through mmio(): not decoding.
    conf1_write(*io, 1, 0x18, 0xfec0'0000, 4);
    CHECK(changes.size() == 6);
    CHECK_FALSE(changes.back().new_address);
    CHECK_FALSE(root->bar_address(1, 2));
    // Writing the same value again reports nothing.
    conf1_write(*io, 1, 0x18, 0xfec0'0000, 4);
    CHECK(changes.size() == 6);
}

TEST_CASE("pci root: slots run out, window runs out") {
    auto root = PciRoot::create({kWindowBase, 0x8000});
    REQUIRE(root->add_device(std::make_shared<FakeDevice>()));
    CHECK_FALSE(root->add_device(std::make_shared<FakeDevice>()));  // 20 KiB do not fit twice
    auto big = PciRoot::create({kWindowBase, kWindowSize});
    for (int i = 1; i < 32; ++i) REQUIRE(big->add_device(std::make_shared<FakeDevice>()));
    CHECK_FALSE(big->add_device(std::make_shared<FakeDevice>()));
}
