#include "devices/virtio/virtio_pci.hpp"

#include <array>
#include <atomic>
#include <cstring>
#include <map>
#include <optional>
#include <thread>

#include <doctest/doctest.h>

#include "devices/pci/pci_root.hpp"

using namespace kestrel;
using namespace kestrel::virtio_pci;

namespace {

constexpr uint64_t kFeatureA = 1u << 0;
constexpr uint64_t kFeatureB = 1u << 9;
constexpr uint64_t kFeatureEventIdx = uint64_t{1} << 29;

class FakeVirtio final : public VirtioDevice {
public:
    uint16_t device_type() const override { return 2; }  // block
    uint64_t device_features() const override {
        return kFeatureA | kFeatureB | kFeatureEventIdx | kFeatureVersion1;
    }
    uint16_t num_queues() const override { return 3; }
    uint16_t max_queue_size() const override { return 256; }
    void read_config(uint64_t offset, std::span<uint8_t> data) override {
        for (size_t i = 0; i < data.size(); ++i)
            data[i] = offset + i < config.size() ? config[offset + i] : 0;
    }
    void write_config(uint64_t offset, std::span<const uint8_t> data) override {
        for (size_t i = 0; i < data.size(); ++i)
            if (offset + i < config.size()) config[offset + i] = data[i];
    }
    Result<void> activate(ActivateContext ctx) override {
        ++activations;
        acked = ctx.acked_features;
        queues = ctx.queues;
        interrupt = &ctx.interrupt;
        if (fail_activate) return fail("fake: refusing to activate");
        return {};
    }
    void queue_notify(uint16_t index) override { notified.push_back(index); }
    void reset() override {
        ++resets;
        interrupt = nullptr;
    }
    bool needs_reset() const override { return broken.load(); }
    Result<QueuePositions> settle_queues() override {
        ++settles;
        QueuePositions out(3);
        for (size_t i = 0; i < queues.size() && i < 3; ++i)
            if (queues[i].ready) out[i] = QueuePosition{.next_avail = static_cast<uint16_t>(100 + i), .signalled_used = 7};
        return out;
    }

    int settles = 0;
    std::array<uint8_t, 16> config{0x10, 0x20, 0x30, 0x40, 0x50, 0x60, 0x70, 0x80};
    int activations = 0, resets = 0;
    bool fail_activate = false;
    std::atomic<bool> broken{false};
    uint64_t acked = 0;
    std::vector<QueueConfig> queues;
    VirtioInterrupt* interrupt = nullptr;
    std::vector<uint16_t> notified;
};

struct NullEvents final : EventRegistry {
    Result<void> add(int, uint32_t, Callback) override { return {}; }
    Result<void> remove(int) override { return {}; }
};

struct FakeSink final : MsiSink {
    std::map<uint16_t, std::pair<uint64_t, uint32_t>> routes;
    std::vector<uint16_t> fired;
    void configure(uint16_t v, uint64_t a, uint32_t d) override { routes[v] = {a, d}; }
    void fire(uint16_t v) override { fired.push_back(v); }
};

GuestMemory make_memory() {
    GuestRegionSpec spec{GuestAddress(0), 0x10'0000};
    auto m = GuestMemory::create(std::span(&spec, 1));
    REQUIRE(m);
    return std::move(*m);
}

// One virtio-pci function in slot 1 of a PciRoot, driven the way a guest would.
struct Rig {
    GuestMemory mem = make_memory();
    NullEvents events;
    std::shared_ptr<FakeSink> sink = std::make_shared<FakeSink>();
    std::shared_ptr<FakeVirtio> dev = std::make_shared<FakeVirtio>();
    std::shared_ptr<VirtioPciDevice> pci = std::make_shared<VirtioPciDevice>(dev, mem, events, sink);
    std::shared_ptr<PciRoot> root = PciRoot::create();
    uint64_t bar0 = 0;

    Rig() {
        REQUIRE(root->add_device(pci) == uint8_t{1});
        bar0 = root->bar_address(1, 0).value_or(0);
        REQUIRE(bar0 != 0);
    }
    uint64_t cfg(uint16_t reg, size_t len) {
        uint64_t v = 0;
        root->config_read(0, 1, 0, reg, std::span(reinterpret_cast<uint8_t*>(&v), len));
        return v;
    }
    void cfg_write(uint16_t reg, uint64_t v, size_t len) {
        root->config_write(0, 1, 0, reg, std::span(reinterpret_cast<const uint8_t*>(&v), len));
    }
    uint64_t rd(uint64_t off, size_t len) {
        uint64_t v = 0;
        root->mmio_read(bar0 + off, std::span(reinterpret_cast<uint8_t*>(&v), len));
        return v;
    }
    void wr(uint64_t off, uint64_t v, size_t len) {
        root->mmio_write(bar0 + off, std::span(reinterpret_cast<const uint8_t*>(&v), len));
    }
    // Common configuration field accessors (virtio 1.2 §4.1.4.3 offsets).
    uint64_t common(uint64_t field, size_t len) { return rd(kCommonOffset + field, len); }
    void set_common(uint64_t field, uint64_t v, size_t len) { wr(kCommonOffset + field, v, len); }
    uint8_t status() { return static_cast<uint8_t>(common(0x14, 1)); }
    void set_status(uint8_t s) { set_common(0x14, s, 1); }
    uint64_t device_features() {
        set_common(0x00, 0, 4);
        uint64_t lo = common(0x04, 4);
        set_common(0x00, 1, 4);
        return lo | common(0x04, 4) << 32;
    }
    void write_driver_features(uint64_t f) {
        set_common(0x08, 0, 4);
        set_common(0x0c, f & 0xffffffff, 4);
        set_common(0x08, 1, 4);
        set_common(0x0c, f >> 32, 4);
    }
    bool negotiate(uint64_t f) {
        set_status(0);
        set_status(kStatusAcknowledge);
        set_status(kStatusAcknowledge | kStatusDriver);
        write_driver_features(f);
        set_status(kStatusAcknowledge | kStatusDriver | kStatusFeaturesOk);
        return (status() & kStatusFeaturesOk) != 0;
    }
    void msix_entry(uint16_t vector, uint64_t addr, uint32_t data, bool masked) {
        uint64_t at = kMsixTableOffset + vector * 16;
        wr(at, addr & 0xffffffff, 4);
        wr(at + 4, addr >> 32, 4);
        wr(at + 8, data, 4);
        wr(at + 12, masked ? 1 : 0, 4);
    }
};

struct VirtioCap {
    uint16_t at;
    uint8_t type, bar;
    uint32_t offset, length, extra;
};

// Walks the capability list from 0x34 as Linux's pci_find_capability does.
std::vector<std::pair<uint8_t, uint16_t>> walk_caps(Rig& r) {
    std::vector<std::pair<uint8_t, uint16_t>> caps;
    REQUIRE((r.cfg(0x06, 2) & 0x10) != 0);
    auto at = static_cast<uint16_t>(r.cfg(0x34, 1));
    for (int guard = 0; at != 0 && guard < 48; ++guard) {
        REQUIRE(at >= 0x40);
        REQUIRE(at % 4 == 0);
        caps.emplace_back(static_cast<uint8_t>(r.cfg(at, 1)), at);
        at = static_cast<uint16_t>(r.cfg(static_cast<uint16_t>(at + 1), 1));
    }
    return caps;
}

std::optional<VirtioCap> find_virtio_cap(Rig& r, uint8_t type) {
    for (auto [id, at] : walk_caps(r)) {
        if (id != 0x09 || r.cfg(static_cast<uint16_t>(at + 3), 1) != type) continue;
        return VirtioCap{at, type, static_cast<uint8_t>(r.cfg(static_cast<uint16_t>(at + 4), 1)),
                         static_cast<uint32_t>(r.cfg(static_cast<uint16_t>(at + 8), 4)),
                         static_cast<uint32_t>(r.cfg(static_cast<uint16_t>(at + 12), 4)),
                         static_cast<uint32_t>(r.cfg(static_cast<uint16_t>(at + 16), 4))};
    }
    return std::nullopt;
}

constexpr uint8_t kAckDriver = kStatusAcknowledge | kStatusDriver;
constexpr uint64_t kGoodFeatures = kFeatureA | kFeatureEventIdx | kFeatureVersion1;

uint16_t msix_cap_of(Rig& r) {
    for (auto [id, at] : walk_caps(r))
        if (id == 0x11) return at;
    return 0;
}

// What Linux leaves behind: features, MSI-X on with vectors 0..3 (vector 3 masked), config
// vector 0, queues 0 and 1 of 3 enabled (vectors 1, 2) at rings in the first 64 KiB.
void bring_up(Rig& r) {
    REQUIRE(r.negotiate(kGoodFeatures));
    const uint16_t msix_at = msix_cap_of(r);
    REQUIRE(msix_at);
    r.cfg_write(msix_at + 2, 0xc000, 2);
    for (uint16_t v = 0; v < 4; ++v) r.msix_entry(v, 0xfee0'0000 + v * 0x1000, 0x40 + v, v == 3);
    r.cfg_write(msix_at + 2, 0x8000, 2);
    r.set_common(0x10, 0, 2);
    for (uint16_t q = 0; q < 2; ++q) {
        r.set_common(0x16, q, 2);
        r.set_common(0x18, 64, 2);
        r.set_common(0x20, 0x1'0000 + q * 0x4000, 8);
        r.set_common(0x28, 0x1'1000 + q * 0x4000, 8);
        r.set_common(0x30, 0x1'2000 + q * 0x4000, 8);
        r.set_common(0x1a, q + 1, 2);
        r.set_common(0x1c, 1, 2);
    }
    r.set_common(0x16, 2, 2);  // queue_select left on the disabled queue
    r.set_status(kAckDriver | kStatusFeaturesOk | kStatusDriverOk);
    REQUIRE(r.dev->activations == 1);
}

// Everything the guest can read through config space and BAR0's common configuration.
std::vector<uint64_t> guest_view(Rig& r) {
    std::vector<uint64_t> v;
    for (uint16_t reg = 0; reg < 0x100; reg += 4) v.push_back(r.cfg(reg, 4));
    for (uint64_t f : {0x10u, 0x12u, 0x14u, 0x15u, 0x16u}) v.push_back(r.common(f, f == 0x14 || f == 0x15 ? 1 : 2));
    const uint64_t selected = r.common(0x16, 2);
    for (uint16_t q = 0; q < 3; ++q) {
        r.set_common(0x16, q, 2);
        for (uint64_t f : {0x18u, 0x1au, 0x1cu}) v.push_back(r.common(f, 2));
        for (uint64_t f : {0x20u, 0x28u, 0x30u}) v.push_back(r.common(f, 8));
    }
    r.set_common(0x16, selected, 2);
    for (uint64_t at = kMsixTableOffset; at < kMsixTableOffset + 4 * 16; at += 4) v.push_back(r.rd(at, 4));
    return v;
}

}  // namespace

TEST_CASE("virtio-pci: identity registers (virtio 1.2 §4.1.2)") {
    Rig r;
    CHECK(r.cfg(0x00, 2) == 0x1af4);
    CHECK(r.cfg(0x02, 2) == 0x1042);  // 0x1040 + block
    CHECK(r.cfg(0x08, 1) == 1);       // revision
    CHECK((r.cfg(0x08, 4) >> 8) == 0x018000);
    CHECK(r.cfg(0x09, 3) == 0xffffff);  // 3-byte cycles do not exist
    CHECK(r.cfg(0x2c, 2) == 0x1af4);
    CHECK(r.cfg(0x2e, 2) >= 0x40);
    CHECK(r.cfg(0x3d, 1) == 0);  // no INTx pin
    // BAR0: 64-bit memory, non-prefetchable, power-of-two size covering the layout.
    CHECK((r.cfg(0x10, 4) & 0xf) == 0x4);
    r.cfg_write(0x04, 0, 2);
    uint64_t lo = r.cfg(0x10, 4);
    r.cfg_write(0x10, 0xffffffff, 4);
    uint64_t size = ~(r.cfg(0x10, 4) & ~0xfull) & 0xffffffff;
    r.cfg_write(0x10, lo, 4);
    CHECK(size + 1 == 0x8000);
}

TEST_CASE("virtio-pci: capability chain carries every virtio structure and MSI-X") {
    Rig r;
    auto caps = walk_caps(r);
    CHECK(caps.size() == 6);
    auto common = find_virtio_cap(r, 1);
    auto notify = find_virtio_cap(r, 2);
    auto isr = find_virtio_cap(r, 3);
    auto device = find_virtio_cap(r, 4);
    auto pcicfg = find_virtio_cap(r, 5);
    REQUIRE(common);
    REQUIRE(notify);
    REQUIRE(isr);
    REQUIRE(device);
    REQUIRE(pcicfg);
    CHECK(common->bar == 0);
    CHECK(common->offset == kCommonOffset);
    CHECK(common->length == 0x3c);
    CHECK(r.cfg(static_cast<uint16_t>(common->at + 2), 1) == 16);  // cap_len
    CHECK(notify->bar == 0);
    CHECK(notify->offset == kNotifyOffset);
    CHECK(notify->length == 3 * 4);
    CHECK(notify->extra == 4);  // notify_off_multiplier
    CHECK(r.cfg(static_cast<uint16_t>(notify->at + 2), 1) == 20);
    CHECK(isr->offset == kIsrOffset);
    CHECK(isr->length == 1);
    CHECK(device->offset == kDeviceConfigOffset);
    CHECK(device->length == 0x1000);
    CHECK(r.cfg(static_cast<uint16_t>(pcicfg->at + 2), 1) == 20);
    // Every structure lies inside BAR0 (32 KiB).
    for (auto& c : {*common, *notify, *isr, *device}) CHECK(c.offset + c.length <= 0x8000);

    uint16_t msix_at = 0;
    for (auto [id, at] : caps)
        if (id == 0x11) msix_at = at;
    REQUIRE(msix_at != 0);
    CHECK((r.cfg(msix_at + 2, 2) & 0x7ff) == 3);  // 4 vectors: 3 queues + config
    CHECK(r.cfg(msix_at + 4, 4) == kMsixTableOffset);  // BIR 0
    uint32_t pba = static_cast<uint32_t>(r.cfg(msix_at + 8, 4));
    CHECK((pba & 7) == 0);
    CHECK(pba >= kMsixTableOffset + 4 * 16);
    // Table size and BIR fields are read-only.
    r.cfg_write(msix_at + 2, 0x07ff, 2);
    r.cfg_write(msix_at + 4, 0, 4);
    CHECK((r.cfg(msix_at + 2, 2) & 0x7ff) == 3);
    CHECK(r.cfg(msix_at + 4, 4) == kMsixTableOffset);
}

TEST_CASE("virtio-pci: Linux's initialisation sequence activates the device") {
    Rig r;
    // virtio_dev_probe: reset, ACKNOWLEDGE, DRIVER, features, FEATURES_OK, re-read.
    r.set_status(0);
    CHECK(r.status() == 0);
    r.set_status(kStatusAcknowledge);
    r.set_status(kAckDriver);
    CHECK(r.status() == kAckDriver);
    uint64_t offered = r.device_features();
    CHECK(offered == (kFeatureA | kFeatureB | kFeatureEventIdx | kFeatureVersion1));
    r.write_driver_features(kGoodFeatures);
    r.set_status(kAckDriver | kStatusFeaturesOk);
    CHECK(r.status() == (kAckDriver | kStatusFeaturesOk));
    // Driver features read back through the select window.
    r.set_common(0x08, 1, 4);
    CHECK(r.common(0x0c, 4) == 1);
    r.set_common(0x08, 0, 4);
    CHECK(r.common(0x0c, 4) == (kFeatureA | kFeatureEventIdx));

    // pci_alloc_irq_vectors: MSI-X on with the function masked, entries, then unmask all.
    uint16_t msix_at = 0;
    for (auto [id, at] : walk_caps(r))
        if (id == 0x11) msix_at = at;
    REQUIRE(msix_at);
    r.cfg_write(msix_at + 2, 0xc000, 2);
    for (uint16_t v = 0; v < 4; ++v) r.msix_entry(v, 0xfee0'0000 + v * 0x1000, 0x40 + v, true);
    r.cfg_write(msix_at + 2, 0x8000, 2);

    // vp_find_vqs_msix: config vector, then per queue.
    r.set_common(0x10, 0, 2);
    CHECK(r.common(0x10, 2) == 0);
    CHECK(r.common(0x12, 2) == 3);  // num_queues
    const uint16_t sizes[] = {256, 128, 64};
    for (uint16_t q = 0; q < 3; ++q) {
        r.set_common(0x16, q, 2);
        CHECK(r.common(0x18, 2) == 256);  // max size before the driver writes it
        CHECK(r.common(0x1c, 2) == 0);
        r.set_common(0x18, sizes[q], 2);
        uint64_t base = 0x1'0000 + q * 0x4000;
        r.set_common(0x20, base & 0xffffffff, 4);  // vp_iowrite64_twopart: low half first
        r.set_common(0x24, base >> 32, 4);
        r.set_common(0x28, base + 0x1000, 8);
        r.set_common(0x30, base + 0x2000, 8);
        r.set_common(0x1a, q + 1, 2);
        CHECK(r.common(0x1a, 2) == q + 1u);
        CHECK(r.common(0x1e, 2) == q);  // queue_notify_off
    }
    for (uint16_t q = 0; q < 3; ++q) {
        r.set_common(0x16, q, 2);
        r.set_common(0x1c, 1, 2);
        CHECK(r.common(0x1c, 2) == 1);
        CHECK(r.common(0x18, 2) == sizes[q]);
        CHECK(r.common(0x20, 8) == 0x1'0000 + q * 0x4000u);
    }
    CHECK(r.dev->activations == 0);
    r.set_status(kAckDriver | kStatusFeaturesOk | kStatusDriverOk);
    CHECK(r.status() == (kAckDriver | kStatusFeaturesOk | kStatusDriverOk));

    REQUIRE(r.dev->activations == 1);
    CHECK(r.dev->acked == kGoodFeatures);
    REQUIRE(r.dev->queues.size() == 3);
    for (uint16_t q = 0; q < 3; ++q) {
        CAPTURE(q);
        const QueueConfig& qc = r.dev->queues[q];
        CHECK(qc.ready);
        CHECK(qc.size == sizes[q]);
        CHECK(qc.desc.raw == 0x1'0000 + q * 0x4000u);
        CHECK(qc.avail.raw == 0x1'1000 + q * 0x4000u);
        CHECK(qc.used.raw == 0x1'2000 + q * 0x4000u);
    }

    // request_irq unmasks the vectors; the sink learns their messages.
    for (uint16_t v = 0; v < 4; ++v) r.wr(kMsixTableOffset + v * 16 + 12, 0, 4);
    CHECK(r.sink->routes.size() == 4);
    CHECK(r.sink->routes[2] == std::pair<uint64_t, uint32_t>{0xfee0'2000, 0x42});

    // Used-buffer notification for queue 1 -> its vector 2; config change -> vector 0.
    REQUIRE(r.dev->interrupt);
    r.dev->interrupt->signal_queue(1);
    CHECK(r.sink->fired == std::vector<uint16_t>{2});
    uint64_t gen = r.common(0x15, 1);
    r.dev->interrupt->signal_config();
    CHECK(r.sink->fired == std::vector<uint16_t>{2, 0});
    CHECK(r.common(0x15, 1) == ((gen + 1) & 0xff));
    CHECK(r.rd(kIsrOffset, 1) == (kIsrQueue | kIsrConfig));
    CHECK(r.rd(kIsrOffset, 1) == 0);  // read-to-clear

    // The driver kicks queue 2 through its notify address.
    r.wr(kNotifyOffset + 2 * 4, 2, 2);
    CHECK(r.dev->notified == std::vector<uint16_t>{2});
    auto addrs = r.pci->notify_addresses();
    REQUIRE(addrs.size() == 3);
    CHECK(addrs[2].address.raw == r.bar0 + kNotifyOffset + 8);
    CHECK(addrs[2].queue_index == 2);

    // Device-specific configuration is the device's.
    CHECK(r.rd(kDeviceConfigOffset + 4, 4) == 0x80706050);
    r.wr(kDeviceConfigOffset + 1, 0xaa, 1);
    CHECK(r.dev->config[1] == 0xaa);
}

TEST_CASE("virtio-pci: FEATURES_OK is refused without VERSION_1 or with unoffered bits") {
    Rig r;
    CHECK_FALSE(r.negotiate(kFeatureA));  // legacy-style driver
    CHECK(r.status() == kAckDriver);
    CHECK_FALSE(r.negotiate(kFeatureVersion1 | (uint64_t{1} << 40)));  // not offered
    CHECK(r.negotiate(kFeatureVersion1));
    // Once FEATURES_OK stands, driver features are frozen.
    r.write_driver_features(kGoodFeatures);
    r.set_common(0x08, 0, 4);
    CHECK(r.common(0x0c, 4) == 0);
    // DRIVER_OK without FEATURES_OK never activates.
    r.set_status(0);
    r.set_status(kAckDriver | kStatusDriverOk);
    CHECK(r.dev->activations == 0);
    CHECK((r.status() & kStatusNeedsReset) != 0);
}

TEST_CASE("virtio-pci: reset returns every transport register to its initial value") {
    Rig r;
    REQUIRE(r.negotiate(kGoodFeatures));
    r.set_common(0x10, 0, 2);
    r.set_common(0x16, 1, 2);
    r.set_common(0x18, 16, 2);
    r.set_common(0x1a, 1, 2);
    r.set_common(0x20, 0x5000, 8);
    r.set_common(0x1c, 1, 2);
    r.set_status(kAckDriver | kStatusFeaturesOk | kStatusDriverOk);
    REQUIRE(r.dev->activations == 1);
    r.dev->interrupt->signal_queue(0);  // leaves ISR set

    r.set_status(0);
    CHECK(r.dev->resets >= 1);
    CHECK(r.status() == 0);
    CHECK(r.common(0x10, 2) == kNoVector);
    CHECK(r.common(0x16, 2) == 0);
    r.set_common(0x16, 1, 2);
    CHECK(r.common(0x18, 2) == 256);
    CHECK(r.common(0x1a, 2) == kNoVector);
    CHECK(r.common(0x1c, 2) == 0);
    CHECK(r.common(0x20, 8) == 0);
    r.set_common(0x08, 0, 4);
    CHECK(r.common(0x0c, 4) == 0);
    CHECK(r.rd(kIsrOffset, 1) == 0);
    // Notifies after reset do not reach the device.
    r.wr(kNotifyOffset, 0, 2);
    CHECK(r.dev->notified.empty());
    // And it can be brought up again.
    REQUIRE(r.negotiate(kGoodFeatures));
    r.set_status(kAckDriver | kStatusFeaturesOk | kStatusDriverOk);
    CHECK(r.dev->activations == 2);
}

TEST_CASE("virtio-pci: activation failure and device errors raise DEVICE_NEEDS_RESET") {
    Rig r;
    r.dev->fail_activate = true;
    REQUIRE(r.negotiate(kGoodFeatures));
    r.set_common(0x10, 0, 2);
    uint16_t msix_at = 0;
    for (auto [id, at] : walk_caps(r))
        if (id == 0x11) msix_at = at;
    r.cfg_write(msix_at + 2, 0x8000, 2);
    r.msix_entry(0, 0xfee0'0000, 0x30, false);
    uint64_t gen = r.common(0x15, 1);
    r.set_status(kAckDriver | kStatusFeaturesOk | kStatusDriverOk);
    CHECK((r.status() & kStatusNeedsReset) != 0);
    CHECK(r.sink->fired == std::vector<uint16_t>{0});  // config change interrupt
    CHECK(r.common(0x15, 1) != gen);
    r.set_status(0);
    CHECK(r.status() == 0);

    r.dev->fail_activate = false;
    r.dev->broken = true;
    CHECK((r.status() & kStatusNeedsReset) != 0);
}

TEST_CASE("virtio-pci: guest-chosen queue sizes and vectors are validated") {
    Rig r;
    r.set_common(0x16, 0, 2);
    r.set_common(0x18, 100, 2);  // not a power of two
    CHECK(r.common(0x18, 2) == 256);
    r.set_common(0x18, 512, 2);  // above the maximum
    CHECK(r.common(0x18, 2) == 256);
    r.set_common(0x18, 0, 2);
    CHECK(r.common(0x18, 2) == 256);
    r.set_common(0x18, 32, 2);
    CHECK(r.common(0x18, 2) == 32);
    r.set_common(0x1a, 4, 2);  // only vectors 0..3 exist
    CHECK(r.common(0x1a, 2) == kNoVector);
    r.set_common(0x10, 0x7fff, 2);
    CHECK(r.common(0x10, 2) == kNoVector);
    // Once enabled, a queue's configuration is frozen; queue_enable cannot be cleared.
    r.set_common(0x1c, 1, 2);
    r.set_common(0x18, 64, 2);
    r.set_common(0x1c, 0, 2);
    CHECK(r.common(0x18, 2) == 32);
    CHECK(r.common(0x1c, 2) == 1);
}

TEST_CASE("virtio-pci: hostile accesses are harmless") {
    Rig r;
    // queue_select out of range: queue fields read 0 / NO_VECTOR and ignore writes.
    r.set_common(0x16, 3, 2);
    CHECK(r.common(0x16, 2) == 3);
    CHECK(r.common(0x18, 2) == 0);
    CHECK(r.common(0x1a, 2) == kNoVector);
    r.set_common(0x18, 16, 2);
    r.set_common(0x1c, 1, 2);
    r.set_common(0x20, 0x1000, 8);
    CHECK(r.common(0x18, 2) == 0);
    CHECK(r.common(0x20, 8) == 0);
    r.set_common(0x16, 0xffff, 2);
    CHECK(r.common(0x1e, 2) == 0);
    // Feature select windows beyond bit 63.
    r.set_common(0x00, 7, 4);
    CHECK(r.common(0x04, 4) == 0);
    r.set_common(0x08, 9, 4);
    r.set_common(0x0c, 0xffffffff, 4);
    CHECK(r.common(0x0c, 4) == 0);
    // Wrong widths are dropped: 1-byte write into queue_select, 4-byte into status+generation.
    r.set_common(0x16, 0, 2);
    r.set_common(0x16, 2, 1);
    CHECK(r.common(0x16, 2) == 0);
    r.set_common(0x14, 0x0f, 4);
    CHECK(r.status() == 0);
    r.set_common(0x22, 0x1234, 4);  // misaligned half of queue_desc
    CHECK(r.common(0x20, 8) == 0);
    // Accesses straddling the end of a region or into gaps and read-only parts.
    CHECK(r.rd(kCommonSize - 2, 4) == 0);
    r.wr(kCommonSize - 2, 0xffffffff, 4);
    CHECK(r.rd(0x800, 4) == 0);
    r.wr(0x800, 1, 4);
    CHECK(r.rd(kDeviceConfigOffset + 0x1000 - 2, 4) == 0);
    r.wr(kIsrOffset, 0xff, 1);
    CHECK(r.rd(kIsrOffset, 1) == 0);
    r.wr(0x7ffc, 1, 4);
    // Odd notify writes: not at a slot start, past the last queue, before DRIVER_OK.
    r.wr(kNotifyOffset + 1, 0, 1);
    r.wr(kNotifyOffset + 3 * 4, 3, 2);
    r.wr(kNotifyOffset, 0, 2);
    CHECK(r.dev->notified.empty());
    // 16-byte and 0-byte accesses straight at the device.
    std::array<uint8_t, 16> big{};
    r.pci->bar_write(0, 0x14, big);
    r.pci->bar_read(0, 0, big);
    r.pci->bar_write(0, 0x14, std::span<const uint8_t>());
    r.pci->bar_read(1, 0, std::span(big).first(4));
    CHECK(big[0] == 0xff);
    r.pci->bar_write(0, ~uint64_t{0} - 1, std::span(big).first(4));
    CHECK(r.status() == 0);
    CHECK(r.dev->activations == 0);
}

TEST_CASE("virtio-pci: VIRTIO_PCI_CAP_PCI_CFG window reaches BAR0 (§4.1.4.9)") {
    Rig r;
    auto cap = find_virtio_cap(r, 5);
    REQUIRE(cap);
    auto at = cap->at;
    // Read num_queues (2 bytes at common + 0x12) through the window.
    r.cfg_write(at + 4, 0, 1);
    r.cfg_write(at + 8, kCommonOffset + 0x12, 4);
    r.cfg_write(at + 12, 2, 4);
    CHECK((r.cfg(at + 16, 4) & 0xffff) == 3);
    // Write device_status through it.
    r.cfg_write(at + 8, kCommonOffset + 0x14, 4);
    r.cfg_write(at + 12, 1, 4);
    r.cfg_write(at + 16, kStatusAcknowledge, 4);
    CHECK(r.status() == kStatusAcknowledge);
    // Bad length, misaligned offset, other BAR: ignored.
    r.cfg_write(at + 12, 3, 4);
    r.cfg_write(at + 16, 0, 4);
    CHECK(r.status() == kStatusAcknowledge);
    r.cfg_write(at + 8, kCommonOffset + 0x13, 4);
    r.cfg_write(at + 12, 2, 4);
    r.cfg_write(at + 16, 0, 4);
    CHECK(r.status() == kStatusAcknowledge);
    r.cfg_write(at + 4, 2, 1);
    r.cfg_write(at + 8, kCommonOffset + 0x14, 4);
    r.cfg_write(at + 12, 1, 4);
    r.cfg_write(at + 16, 0, 4);
    CHECK(r.status() == kStatusAcknowledge);
}

TEST_CASE("virtio-pci: notify addresses follow BAR0 and memory decode") {
    Rig r;
    auto a = r.pci->notify_addresses();
    REQUIRE(a.size() == 3);
    CHECK(a[0].address.raw == r.bar0 + kNotifyOffset);
    CHECK(a[1].address.raw == r.bar0 + kNotifyOffset + 4);
    uint64_t moved = 0xd000'0000;
    r.cfg_write(0x10, moved, 4);
    r.cfg_write(0x14, 0, 4);
    a = r.pci->notify_addresses();
    REQUIRE(a.size() == 3);
    CHECK(a[2].address.raw == moved + kNotifyOffset + 8);
    CHECK(r.root->bar_address(1, 0) == moved);
    r.cfg_write(0x04, 0, 2);
    CHECK(r.pci->notify_addresses().empty());
}

TEST_CASE("virtio-pci: with MSI-X disabled interrupts only set ISR and PBA bits") {
    Rig r;
    REQUIRE(r.negotiate(kGoodFeatures));
    r.set_common(0x16, 0, 2);
    r.set_common(0x1a, 1, 2);
    r.set_common(0x1c, 1, 2);
    r.set_status(kAckDriver | kStatusFeaturesOk | kStatusDriverOk);
    REQUIRE(r.dev->interrupt);
    r.dev->interrupt->signal_queue(0);
    CHECK(r.sink->fired.empty());
    CHECK(r.rd(0x5000, 8) == 0b10);  // PBA bit of vector 1
    CHECK(r.rd(kIsrOffset, 1) == kIsrQueue);
    r.dev->interrupt->signal_queue(2);  // NO_VECTOR: nothing pending
    CHECK(r.rd(0x5000, 8) == 0b10);
}

TEST_CASE("virtio-pci: concurrent vCPU accesses and event-loop interrupts") {
    Rig r;
    REQUIRE(r.negotiate(kGoodFeatures));
    uint16_t msix_at = 0;
    for (auto [id, at] : walk_caps(r))
        if (id == 0x11) msix_at = at;
    r.cfg_write(msix_at + 2, 0x8000, 2);
    for (uint16_t v = 0; v < 4; ++v) r.msix_entry(v, 0xfee0'0000, v, false);
    for (uint16_t q = 0; q < 3; ++q) {
        r.set_common(0x16, q, 2);
        r.set_common(0x1a, q + 1, 2);
        r.set_common(0x1c, 1, 2);
    }
    r.set_status(kAckDriver | kStatusFeaturesOk | kStatusDriverOk);
    REQUIRE(r.dev->interrupt);
    VirtioInterrupt* irq = r.dev->interrupt;
    std::atomic<bool> stop{false};
    std::vector<std::thread> vcpus;
    for (int t = 0; t < 3; ++t)
        vcpus.emplace_back([&, t] {
            for (int i = 0; i < 2000; ++i) {
                r.rd(0x12, 2);
                r.rd(kIsrOffset, 1);
                r.wr(kMsixTableOffset + (t + 1) * 16 + 12, i & 1, 4);
                r.cfg(0x04, 2);
                r.pci->notify_addresses();
            }
        });
    std::thread loop([&] {
        while (!stop) irq->signal_queue(1);
    });
    for (auto& v : vcpus) v.join();
    stop = true;
    loop.join();
    CHECK(r.status() == (kAckDriver | kStatusFeaturesOk | kStatusDriverOk));
}

TEST_CASE("virtio-pci: save and restore carry the driver's whole set-up into a fresh function") {
    Rig a;
    bring_up(a);
    // The guest moves BAR0 (as Linux may when it reassigns resources).
    const uint64_t moved = a.bar0 + 0x10'0000;
    a.cfg_write(0x10, moved & 0xffffffff, 4);
    a.bar0 = moved;
    a.pci->config_changed();  // config_generation 1, vector 0 fired
    auto st = a.pci->save();
    REQUIRE(st);
    CHECK(a.dev->settles == 1);
    CHECK(st->activated);
    CHECK(st->device_type == 2);
    REQUIRE(st->queues.size() == 3);
    CHECK(st->queues[0].position == QueuePosition{.next_avail = 100, .signalled_used = 7});
    CHECK(st->queues[1].position == QueuePosition{.next_avail = 101, .signalled_used = 7});
    CHECK_FALSE(st->queues[2].position.has_value());
    const auto before = guest_view(a);

    Rig b;  // a new kestrel: same device, nothing set up
    b.sink->fired.clear();
    REQUIRE(b.pci->restore(*st));
    b.root->reload(1);
    CHECK(b.root->bar_address(1, 0) == moved);
    b.bar0 = moved;
    CHECK(guest_view(b) == before);
    // The device continues from the saved positions, with what the driver negotiated.
    REQUIRE(b.dev->activations == 1);
    CHECK(b.dev->acked == kGoodFeatures);
    REQUIRE(b.dev->queues.size() == 3);
    CHECK(b.dev->queues[0].position == st->queues[0].position);
    CHECK(b.dev->queues[1].position == st->queues[1].position);
    CHECK(b.dev->queues[1].size == 64);
    CHECK(b.dev->queues[1].desc.raw == 0x1'4000);
    CHECK_FALSE(b.dev->queues[2].ready);
    // MSI-X routes for the unmasked vectors; each enabled queue's vector fired once.
    CHECK(b.sink->routes.size() == 3);
    CHECK(b.sink->routes[2] == std::pair<uint64_t, uint32_t>{0xfee0'2000, 0x42});
    CHECK(b.sink->fired == std::vector<uint16_t>{1, 2});
    // The restored state saves back to itself (ISR aside: the restore's interrupts set it).
    auto again = b.pci->save();
    REQUIRE(again);
    again->isr = st->isr;
    CHECK(*again == *st);
}

TEST_CASE("virtio-pci: a stopped function restores without activating its device") {
    Rig a;
    REQUIRE(a.negotiate(kGoodFeatures));
    auto st = a.pci->save();
    REQUIRE(st);
    CHECK(a.dev->settles == 0);
    CHECK_FALSE(st->activated);
    Rig b;
    REQUIRE(b.pci->restore(*st));
    CHECK(b.dev->activations == 0);
    CHECK(b.status() == (kAckDriver | kStatusFeaturesOk));
}

TEST_CASE("virtio-pci: restoring into a running function resets its device first") {
    Rig a;
    bring_up(a);
    auto st = a.pci->save();
    REQUIRE(st);
    const int resets = a.dev->resets;  // negotiate() began with a reset
    REQUIRE(a.pci->restore(*st));
    CHECK(a.dev->resets == resets + 1);
    CHECK(a.dev->activations == 2);
}

TEST_CASE("virtio-pci: a hostile or mismatched state is refused and changes nothing") {
    Rig a;
    bring_up(a);
    auto good = a.pci->save();
    REQUIRE(good);
    using Mutate = void (*)(VirtioPciDevice::State&);
    const std::pair<const char*, Mutate> cases[] = {
        {"device type", [](auto& s) { s.device_type = 1; }},
        {"queues", [](auto& s) { s.queues.pop_back(); }},
        {"not a power of two", [](auto& s) { s.queues[0].size = 48; }},
        {"not a power of two", [](auto& s) { s.queues[1].size = 512; }},
        {"MSI-X vector 9", [](auto& s) { s.queues[0].msix_vector = 9; }},
        {"config_msix_vector", [](auto& s) { s.config_msix_vector = 4; }},
        {"not a subset", [](auto& s) { s.driver_features |= uint64_t{1} << 40; }},
        {"not a subset", [](auto& s) { s.driver_features &= ~kFeatureVersion1; }},
        {"DRIVER_OK", [](auto& s) { s.status &= static_cast<uint8_t>(~kStatusDriverOk); }},
        {"no position", [](auto& s) { s.queues[0].position.reset(); }},
        {"a position", [](auto& s) { s.queues[2].position = QueuePosition{}; }},
        {"read-only bits", [](auto& s) { s.config[0] ^= 1; }},          // vendor ID
        {"read-only bits", [](auto& s) { s.config[0x10] |= 0x0f; }},    // BAR0 flag bits
        {"read-only bits", [](auto& s) { s.config[0x40] ^= 0xff; }},    // a capability
        {"bytes", [](auto& s) { s.config.resize(256); }},
        {"vectors", [](auto& s) { s.msix.vectors.pop_back(); }},
        {"DWORD aligned", [](auto& s) { s.msix.vectors[1].address_lo |= 2; }},
        {"reserved vector control", [](auto& s) { s.msix.vectors[1].control = 2; }},
        {"past vector", [](auto& s) { s.msix.pending[0] = uint64_t{1} << 40; }},
    };
    Rig b;
    const auto fresh = guest_view(b);
    for (const auto& [what_c, mutate] : cases) {
        const std::string what = what_c;
        CAPTURE(what);
        VirtioPciDevice::State s = *good;
        mutate(s);
        auto r = b.pci->restore(s);
        REQUIRE_FALSE(r);
        CHECK(r.error().message.find(what) != std::string::npos);
        CHECK(b.dev->activations == 0);
        CHECK(b.dev->resets == 0);
        CHECK(b.sink->routes.empty());
        CHECK(guest_view(b) == fresh);
    }
}

TEST_CASE("virtio-pci: a device that refuses its saved queues leaves the function reset") {
    Rig a;
    bring_up(a);
    auto st = a.pci->save();
    REQUIRE(st);
    Rig b;
    b.dev->fail_activate = true;
    auto r = b.pci->restore(*st);
    REQUIRE_FALSE(r);
    CHECK(r.error().message.find("refused its queues") != std::string::npos);
    CHECK(b.status() == 0);
}
