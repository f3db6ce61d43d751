// libFuzzer target for PCI configuration space and BAR decoding (devices/pci/pci_root.*,
// pci_config_space.*, pci_host_bridge.*, and virtio_pci.* as a function on the bus): any
// sequence of configuration cycles through the three ways a guest reaches them (ports
// 0xcf8/0xcfc, ECAM, direct with any bus/device/function/register), BAR and command
// writes that move, size or disable BARs, and MMIO accesses anywhere in the BAR window.
//
// Bus 0: the host bridge (slot 0), a contract-checking function in slot 1 (64-bit BAR0 of
// 16 KiB, 32-bit prefetchable BAR2 of 4 KiB) and two virtio-pci functions (virtio-rng,
// deterministic entropy) in slots 2 and 3. Checks besides the sanitizers:
//  - PciDevice's contract (pci_device.hpp): config accesses are 1, 2 or 4 bytes inside one
//    dword below 4096; BAR accesses name a BAR the function has and lie inside it;
//  - every BarChangeCallback names the decode it replaces, and the decodes those callbacks
//    describe are exactly what bar_address() reports;
//  - a decoded BAR is naturally aligned and wholly inside the window;
//  - a virtio function's notify addresses follow its decoded BAR0 (what the VMM registers
//    its ioeventfds at);
//  - slot 0 always reads as the host bridge, an empty slot as all ones.
//
// Input: a sequence of ops, each one selector byte (b % 9) and its operands:
//   0 port write   u8 port offset (& 7), u8 width (1 << (b & 3)), u32 value
//   1 port read    u8 port offset, u8 width
//   2 ECAM write   u32 offset, u8 width, u32 value
//   3 ECAM read    u32 offset, u8 width
//   4 cfg write    u8 bus, u8 device, u8 function, u16 register, u8 width, u32 value
//   5 MMIO write   u32 offset into the window, u8 width (1 << (b & 3)), u64 value
//   6 MMIO read    u32 offset, u8 width
//   7 BAR          u8 slot (& 31), u8 register index (% 6), u32 value (via ECAM, dword)
//   8 command      u8 slot (& 31), u16 command (via ports 0xcf8/0xcfc)
#include <array>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <utility>

#include "devices/pci/pci_config_space.hpp"
#include "devices/pci/pci_root.hpp"
#include "devices/virtio/rng/virtio_rng.hpp"
#include "devices/virtio/virtio_pci.hpp"
#include "tests/fuzz/fuzz_support.hpp"

using namespace kestrel;
using namespace kestrel::fuzz;

namespace {

constexpr uint8_t kCheckSlot = 1;
constexpr uint8_t kVirtioSlots[] = {2, 3};

class ContractDevice final : public PciDevice {
public:
    ContractDevice() : config_(PciIdentity{.vendor_id = 0x1234, .device_id = 0x5678, .base_class = 0xff}) {
        check(config_.add_memory_bar({.index = 0, .size = 0x4000, .is_64bit = true}).has_value());
        check(config_.add_memory_bar({.index = 2, .size = 0x1000, .prefetchable = true}).has_value());
    }
    void config_read(uint16_t offset, std::span<uint8_t> data) override {
        check_config_access(offset, data.size());
        config_.read(offset, data);
    }
    void config_write(uint16_t offset, std::span<const uint8_t> data) override {
        check_config_access(offset, data.size());
        config_.write(offset, data);
    }
    std::vector<PciBarSpec> bar_specs() const override { return config_.bars(); }
    void bar_read(uint8_t bar, uint64_t offset, std::span<uint8_t> data) override {
        check_bar_access(bar, offset, data.size());
        std::fill(data.begin(), data.end(), uint8_t{0x5a});
    }
    void bar_write(uint8_t bar, uint64_t offset, std::span<const uint8_t> data) override {
        check_bar_access(bar, offset, data.size());
    }

private:
    static void check_config_access(uint16_t offset, size_t len) {
        check(len == 1 || len == 2 || len == 4);
        check(offset % 4 + len <= 4 && offset < PciConfigSpace::kSize);
    }
    void check_bar_access(uint8_t bar, uint64_t offset, size_t len) const {
        uint64_t size = bar == 0 ? 0x4000 : bar == 2 ? 0x1000 : 0;
        check(size != 0 && offset < size && len <= size - offset);
    }
    PciConfigSpace config_;
};

struct Rig {
    GuestMemory& mem = memory();
    FakeRegistry events;
    std::shared_ptr<PciRoot> root = PciRoot::create();
    std::shared_ptr<BusDevice> ports = root->config_io();
    std::shared_ptr<BusDevice> ecam = root->ecam();
    std::shared_ptr<BusDevice> mmio = root->mmio();
    std::vector<std::shared_ptr<VirtioPciDevice>> virtio;
    // (slot, bar) -> decoded base, as the callbacks told it.
    std::map<std::pair<uint8_t, uint8_t>, uint64_t> decoded;

    Rig() {
        check(root->add_device(std::make_shared<ContractDevice>()) == kCheckSlot);
        for (uint8_t slot : kVirtioSlots) {
            auto rng = std::make_shared<VirtioRng>([](std::span<uint8_t> out) -> Result<void> {
                std::fill(out.begin(), out.end(), uint8_t{0xa5});
                return {};
            });
            virtio.push_back(std::make_shared<VirtioPciDevice>(rng, mem, events, nullptr));
            check(root->add_device(virtio.back()) == slot);
        }
        // Registration placed the BARs already; the model starts from there.
        for (uint8_t slot = 1; slot <= 3; ++slot)
            for (uint8_t bar = 0; bar < 6; ++bar)
                if (auto a = root->bar_address(slot, bar)) decoded[{slot, bar}] = *a;
        root->set_bar_change_callback([this](const PciBarChange& c) {
            auto key = std::pair{c.slot, c.bar};
            auto it = decoded.find(key);
            std::optional<uint64_t> before;
            if (it != decoded.end()) before = it->second;
            check(before == c.old_address && c.old_address != c.new_address);
            if (c.new_address) decoded[key] = *c.new_address;
            else decoded.erase(key);
        });
    }

    uint32_t cfg_read32(uint8_t slot, uint16_t reg) {
        std::array<uint8_t, 4> b{};
        root->config_read(0, slot, 0, reg, b);
        uint32_t v;
        std::memcpy(&v, b.data(), 4);
        return v;
    }

    void verify() {
        const auto w = root->window();
        for (uint8_t slot = 0; slot < PciRoot::kMaxSlots; ++slot)
            for (uint8_t bar = 0; bar < 6; ++bar) {
                auto a = root->bar_address(slot, bar);
                auto it = decoded.find({slot, bar});
                check(a.has_value() == (it != decoded.end()));
                if (!a) continue;
                check(*a == it->second);
                uint64_t size = slot == kCheckSlot ? (bar == 0 ? 0x4000 : 0x1000) : 0;
                if (slot != kCheckSlot) {
                    for (const auto& s : virtio[slot - kVirtioSlots[0]]->bar_specs())
                        if (s.index == bar) size = s.size;
                }
                check(size != 0 && *a % size == 0);
                check(*a >= w.base && *a - w.base <= w.size && size <= w.size - (*a - w.base));
            }
        for (size_t i = 0; i < virtio.size(); ++i) {
            auto bar0 = root->bar_address(kVirtioSlots[i], 0);
            auto notify = virtio[i]->notify_addresses();
            if (bar0) {
                check(!notify.empty() && notify[0].address.raw == *bar0 + virtio_pci::kNotifyOffset);
                check(notify[0].queue_index == 0);
            }
        }
        check(cfg_read32(0, 0) == 0x0d57'8086);
        check(cfg_read32(31, 0) == 0xffff'ffff);
    }
};

void bus_write(BusDevice& d, uint64_t offset, unsigned width, uint64_t value) {
    std::array<uint8_t, 8> b{};
    std::memcpy(b.data(), &value, 8);
    d.write(offset, std::span(b).first(width));
}

void bus_read(BusDevice& d, uint64_t offset, unsigned width) {
    std::array<uint8_t, 8> b{};
    d.read(offset, std::span(b).first(width));
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
    quiet_logs();
    return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    clear_memory(memory());
    Rig rig;  // fresh bus per input: BAR placement and command bits start from firmware's
    rig.verify();
    Input in(data, size);
    for (int ops = 0; !in.empty() && ops < 2048; ++ops) {
        switch (in.u8() % 9) {
        case 0: {
            uint64_t port = in.u8() & 7;
            unsigned width = 1u << (in.u8() & 3);
            bus_write(*rig.ports, port, width, in.u32());
            break;
        }
        case 1: {
            uint64_t port = in.u8() & 7;
            bus_read(*rig.ports, port, 1u << (in.u8() & 3));
            break;
        }
        case 2: {
            uint64_t off = in.u32();
            unsigned width = 1u << (in.u8() & 3);
            bus_write(*rig.ecam, off, width, in.u32());
            break;
        }
        case 3: {
            uint64_t off = in.u32();
            bus_read(*rig.ecam, off, 1u << (in.u8() & 3));
            break;
        }
        case 4: {
            uint8_t bus = in.u8(), dev = in.u8(), fn = in.u8();
            uint16_t reg = in.u16();
            unsigned width = 1u << (in.u8() & 3);
            uint32_t v = in.u32();
            rig.root->config_write(bus, dev, fn, reg,
                                   std::span(reinterpret_cast<const uint8_t*>(&v), std::min(width, 4u)));
            break;
        }
        case 5: {
            uint64_t off = in.u32();
            unsigned width = 1u << (in.u8() & 3);
            bus_write(*rig.mmio, off, width, in.u64());
            break;
        }
        case 6: {
            uint64_t off = in.u32();
            bus_read(*rig.mmio, off, 1u << (in.u8() & 3));
            break;
        }
        case 7: {
            uint8_t slot = in.u8() & 31;
            uint16_t reg = static_cast<uint16_t>(pci_reg::kBar0 + 4 * (in.u8() % 6));
            bus_write(*rig.ecam, uint64_t{slot} << 15 | reg, 4, in.u32());
            break;
        }
        case 8: {
            uint8_t slot = in.u8() & 31;
            bus_write(*rig.ports, 0, 4, 0x8000'0000u | uint32_t{slot} << 11 | pci_reg::kCommand);
            bus_write(*rig.ports, 4, 2, in.u16());
            break;
        }
        }
        rig.verify();
    }
    return 0;
}
