// libFuzzer target for queue set-up through the virtio-pci transport (devices/virtio/
// virtio_pci.*, virtio 1.2 §4.1.4.3 common configuration) with a real device behind it
// (virtio-rng: one queue, a deterministic entropy source): any register sequence at any
// offset and width, any ring addresses and sizes, feature and status writes in any order,
// notifications, MSI-X table writes, the PCI configuration access capability (§4.1.4.9),
// and chains the driver puts on whatever rings the device was told about. The device
// activates on DRIVER_OK with whatever the registers hold and then serves the queue.
//
// Checks besides the sanitizers:
//  - read-only registers: num_queues is 1, device_feature shows exactly the device's
//    features for selects 0/1 and 0 beyond, queue_size is 0 or a power of two <= 256;
//  - vectors read back are NO_VECTOR or one the function has (§4.1.5.1.2);
//  - MSI-X messages fire only for vectors the table has and has configured;
//  - after a reset (status 0, §2.4 / §4.1.4.3.2) status reads 0, the queue registers read
//    their reset values, and a notification makes the device touch no guest memory.
//
// Input: a sequence of ops, each one selector byte (b % 11) and its operands:
//   0 common write  u8 offset (% 0x40), u8 width (1 << (b & 3)), u64 value
//   1 common read   u8 offset, u8 width
//   2 status        u8 device_status
//   3 queue         u16 select, u16 size, u64 desc, u64 driver, u64 device, u16 vector,
//                   u8 flags (bit 0: 64-bit fields as two 32-bit halves, bit 1: enable)
//   4 features      u32 low, u32 high (driver_feature_select 0 then 1)
//   5 notify        u16 queue index (written to its notify address, §4.1.5.2)
//   6 BAR0          u16 offset, u8 width, u64 value, u8 (bit 0: read)
//   7 memory        u32 address, u8 length, bytes
//   8 chain         on the rings queue 0 reports now: FuzzDriver op (fuzz_support.hpp)
//   9 config        u16 offset, u8 width (1, 2 or 4, kept inside one dword), u32 value,
//                   u8 (bit 0: read)
//  10 MSI-X entry   u8 vector, u32 address lo, u32 address hi, u32 data, u32 control
#include <array>
#include <cstdint>
#include <memory>
#include <numeric>
#include <optional>

#include "devices/virtio/rng/virtio_rng.hpp"
#include "devices/virtio/virtio_pci.hpp"
#include "tests/fuzz/fuzz_support.hpp"

using namespace kestrel;
using namespace kestrel::fuzz;
using namespace kestrel::virtio_pci;

namespace {

// Common configuration offsets (virtio 1.2 §4.1.4.3).
constexpr uint64_t kDeviceFeatureSelect = 0x00, kDeviceFeature = 0x04;
constexpr uint64_t kDriverFeatureSelect = 0x08, kDriverFeature = 0x0c;
constexpr uint64_t kConfigMsixVector = 0x10, kNumQueues = 0x12, kDeviceStatus = 0x14;
constexpr uint64_t kQueueSelect = 0x16, kQueueSize = 0x18, kQueueMsixVector = 0x1a;
constexpr uint64_t kQueueEnable = 0x1c, kQueueDesc = 0x20, kQueueDriver = 0x28, kQueueDevice = 0x30;

struct CheckingSink final : MsiSink {
    uint16_t vectors = 0;
    std::array<bool, 64> configured{};
    void configure(uint16_t v, uint64_t, uint32_t) override {
        check(v < vectors);
        configured[v] = true;
    }
    void fire(uint16_t v) override { check(v < vectors && configured[v]); }
};

struct Rig {
    GuestMemory& mem = memory();
    FakeRegistry events;
    std::shared_ptr<CheckingSink> sink = std::make_shared<CheckingSink>();
    std::shared_ptr<VirtioRng> rng = std::make_shared<VirtioRng>([](std::span<uint8_t> out) -> Result<void> {
        std::fill(out.begin(), out.end(), uint8_t{0xa5});
        return {};
    });
    std::shared_ptr<VirtioPciDevice> pci = std::make_shared<VirtioPciDevice>(rng, mem, events, sink);
    std::optional<FuzzDriver> driver;
    QueueConfig driver_cfg{};

    Rig() { sink->vectors = pci->num_msix_vectors(); }

    void wr(uint64_t off, uint64_t v, unsigned width) {
        std::array<uint8_t, 8> b{};
        std::memcpy(b.data(), &v, 8);
        pci->bar_write(kBar, off, std::span(b).first(width));
    }
    uint64_t rd(uint64_t off, unsigned width) {
        std::array<uint8_t, 8> b{};
        pci->bar_read(kBar, off, std::span(b).first(width));
        uint64_t v;
        std::memcpy(&v, b.data(), 8);
        return v;
    }
    uint64_t common(uint64_t field, unsigned width) { return rd(kCommonOffset + field, width); }
    void set_common(uint64_t field, uint64_t v, unsigned width) { wr(kCommonOffset + field, v, width); }

    // The driver side follows the rings queue 0 reports now; a new placement starts a new
    // driver (fresh avail idx), as a driver re-initialising the queue would.
    FuzzDriver& queue0_driver() {
        uint16_t saved = static_cast<uint16_t>(common(kQueueSelect, 2));
        set_common(kQueueSelect, 0, 2);
        QueueConfig c{.size = static_cast<uint16_t>(common(kQueueSize, 2)),
                      .ready = true,
                      .desc = GuestAddress(common(kQueueDesc, 8)),
                      .avail = GuestAddress(common(kQueueDriver, 8)),
                      .used = GuestAddress(common(kQueueDevice, 8))};
        set_common(kQueueSelect, saved, 2);
        if (!driver || c.size != driver_cfg.size || c.desc != driver_cfg.desc ||
            c.avail != driver_cfg.avail || c.used != driver_cfg.used) {
            driver.emplace(mem, c);
            driver_cfg = c;
        }
        return *driver;
    }

    void verify() {
        check(common(kNumQueues, 2) == 1);
        uint64_t features = rng->device_features();
        uint32_t saved = static_cast<uint32_t>(common(kDeviceFeatureSelect, 4));
        for (uint32_t sel : {0u, 1u, 2u}) {
            set_common(kDeviceFeatureSelect, sel, 4);
            uint64_t want = sel == 0 ? features & 0xffffffff : sel == 1 ? features >> 32 : 0;
            check(common(kDeviceFeature, 4) == want);
        }
        set_common(kDeviceFeatureSelect, saved, 4);
        uint16_t qsize = static_cast<uint16_t>(common(kQueueSize, 2));
        check(qsize == 0 || (std::has_single_bit(qsize) && qsize <= VirtioRng::kQueueSize));
        for (uint64_t field : {kConfigMsixVector, kQueueMsixVector}) {
            uint16_t v = static_cast<uint16_t>(common(field, 2));
            check(v == kNoVector || v < pci->num_msix_vectors());
        }
    }
};


}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
    quiet_logs();
    return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    clear_memory(memory());
    Rig rig;
    Input in(data, size);
    for (int ops = 0; !in.empty() && ops < 1024; ++ops) {
        switch (in.u8() % 11) {
        case 0: {
            uint64_t off = in.u8() % 0x40;
            unsigned width = 1u << (in.u8() & 3);
            rig.set_common(off, in.u64(), width);
            break;
        }
        case 1: {
            uint64_t off = in.u8() % 0x40;
            rig.common(off, 1u << (in.u8() & 3));
            break;
        }
        case 2: rig.set_common(kDeviceStatus, in.u8(), 1); break;
        case 3: {
            uint16_t sel = in.u16(), qsize = in.u16();
            uint64_t desc = in.u64(), driver = in.u64(), device = in.u64();
            uint16_t vector = in.u16();
            uint8_t flags = in.u8();
            rig.set_common(kQueueSelect, sel, 2);
            rig.set_common(kQueueSize, qsize, 2);
            for (auto [field, v] : {std::pair{kQueueDesc, desc}, std::pair{kQueueDriver, driver},
                                    std::pair{kQueueDevice, device}}) {
                if (flags & 1) {
                    rig.set_common(field, v & 0xffffffff, 4);
                    rig.set_common(field + 4, v >> 32, 4);
                } else {
                    rig.set_common(field, v, 8);
                }
            }
            rig.set_common(kQueueMsixVector, vector, 2);
            if (flags & 2) rig.set_common(kQueueEnable, 1, 2);
            break;
        }
        case 4: {
            uint32_t lo = in.u32(), hi = in.u32();
            rig.set_common(kDriverFeatureSelect, 0, 4);
            rig.set_common(kDriverFeature, lo, 4);
            rig.set_common(kDriverFeatureSelect, 1, 4);
            rig.set_common(kDriverFeature, hi, 4);
            break;
        }
        case 5: {
            uint16_t q = in.u16();
            rig.wr(kNotifyOffset + uint64_t{q} * kNotifyOffMultiplier, q, 2);
            break;
        }
        case 6: {
            uint64_t off = in.u16();
            unsigned width = 1u << (in.u8() & 3);
            uint64_t v = in.u64();
            if (in.u8() & 1) rig.rd(off, width);
            else rig.wr(off, v, width);
            break;
        }
        case 7: raw_memory_write(rig.mem, in); break;
        case 8: rig.queue0_driver().add_chain(in); break;
        case 9: {
            uint16_t off = in.u16() % PciConfigSpace::kSize;
            unsigned width = 1u << (in.u8() % 3);
            off = static_cast<uint16_t>(off & ~(width - 1));  // PciRoot's rule: inside a dword
            uint32_t v = in.u32();
            std::span<uint8_t> bytes(reinterpret_cast<uint8_t*>(&v), width);
            if (in.u8() & 1) rig.pci->config_read(off, bytes);
            else rig.pci->config_write(off, bytes);
            break;
        }
        case 10: {
            uint64_t base = kMsixTableOffset + uint64_t{in.u8()} * 16;
            for (unsigned f = 0; f < 16; f += 4) rig.wr(base + f, in.u32(), 4);
            break;
        }
        }
        rig.verify();
    }

    // Reset (§4.1.4.3.2): registers back to their reset values, and the device has let go
    // of guest memory: a notification now must not change a byte of it.
    rig.set_common(kDeviceStatus, 0, 1);
    check(rig.common(kDeviceStatus, 1) == 0);
    rig.set_common(kQueueSelect, 0, 2);
    check(rig.common(kQueueEnable, 2) == 0);
    check(rig.common(kQueueDesc, 8) == 0 && rig.common(kQueueDriver, 8) == 0 &&
          rig.common(kQueueDevice, 8) == 0);
    check(rig.common(kQueueMsixVector, 2) == kNoVector);
    check(rig.common(kConfigMsixVector, 2) == kNoVector);
    check(!rig.rng->needs_reset());
    MemorySnapshot before(rig.mem);
    rig.wr(kNotifyOffset, 0, 2);
    rig.rng->queue_notify(0);
    check(before.unchanged());
    return 0;
}
