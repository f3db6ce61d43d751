// The image swap under a running virtio-blk device (PATCH /drives path_on_host), driven the
// way a guest sees it: through the virtio-pci transport (common config, device config in
// BAR0, MSI-X) with a mock driver's rings.
#include <doctest/doctest.h>
#include <poll.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <memory>

#include "devices/pci/pci_root.hpp"
#include "devices/virtio/blk/test_hung_fuse.hpp"
#include "devices/virtio/blk/test_temp_file.hpp"
#include "devices/virtio/blk/virtio_blk.hpp"
#include "devices/virtio/queue/mock_driver.hpp"
#include "devices/virtio/virtio_pci.hpp"

using namespace kestrel;
using namespace kestrel::virtio_pci;
using kestrel::test::HungFuseFile;
using kestrel::test::pattern;
using kestrel::test::TempImage;

namespace {

// The event loop, played by the test: polls the registered fds and runs their callbacks.
class PolledRegistry final : public EventRegistry {
public:
    Result<void> add(int fd, uint32_t, Callback cb) override {
        cbs_[fd] = std::move(cb);
        return {};
    }
    Result<void> remove(int fd) override {
        cbs_.erase(fd);
        return {};
    }
    void dispatch(int timeout_ms) {
        std::vector<pollfd> fds;
        for (auto& [fd, cb] : cbs_) fds.push_back(pollfd{fd, POLLIN, 0});
        if (::poll(fds.data(), fds.size(), timeout_ms) <= 0) return;
        for (auto& p : fds)
            if ((p.revents & POLLIN) && cbs_.count(p.fd)) {
                auto cb = cbs_[p.fd];
                cb(static_cast<uint32_t>(p.revents));
            }
    }

private:
    std::map<int, Callback> cbs_;
};

struct RecordingMsi final : MsiSink {
    std::vector<uint16_t> fired;
    void configure(uint16_t, uint64_t, uint32_t) override {}
    void fire(uint16_t v) override { fired.push_back(v); }
};

constexpr uint64_t kRingArea = 8 << 20;
constexpr uint16_t kConfigVector = 0, kQueueVector = 1;

std::vector<uint8_t> header(uint32_t type, uint64_t sector) {
    blk::RequestHeader h{type, 0, sector};
    std::vector<uint8_t> v(sizeof h);
    std::memcpy(v.data(), &h, sizeof h);
    return v;
}

GuestMemory make_memory() {
    GuestRegionSpec spec{GuestAddress(0), kRingArea};
    auto m = GuestMemory::create(std::span(&spec, 1));
    REQUIRE(m.has_value());
    return std::move(*m);
}

// A virtio-blk function on image `a`, set up by a Linux-like driver: MSI-X vector 0 for
// configuration changes, vector 1 for its one queue, DRIVER_OK.
struct SwapRig {
    TempImage a;
    GuestMemory mem = make_memory();
    PolledRegistry events;
    std::shared_ptr<RecordingMsi> msi = std::make_shared<RecordingMsi>();
    std::shared_ptr<VirtioBlk> blk;
    std::shared_ptr<VirtioPciDevice> pci;
    std::shared_ptr<PciRoot> root = PciRoot::create();
    uint64_t bar0 = 0;
    MockDriver drv{mem, GuestAddress(0), kRingArea, 64};

    explicit SwapRig(uint64_t bytes, bool read_only = false) : a(bytes) {
        VirtioBlkOptions o;
        o.path = a.path();
        o.read_only = read_only;
        auto d = VirtioBlk::create(o);
        REQUIRE(d.has_value());
        blk = std::move(*d);
        pci = std::make_shared<VirtioPciDevice>(blk, mem, events, msi);
        REQUIRE(root->add_device(pci) == uint8_t{1});
        bar0 = root->bar_address(1, 0).value_or(0);
        REQUIRE(bar0 != 0);
        cfg_write(0x04, 0x06, 2);  // memory decode + bus master

        uint16_t msix_at = 0;
        for (uint16_t at = static_cast<uint16_t>(cfg(0x34, 1)); at != 0; at = static_cast<uint16_t>(cfg(at + 1, 1)))
            if (cfg(at, 1) == 0x11) msix_at = at;
        REQUIRE(msix_at != 0);
        cfg_write(msix_at + 2, 0x8000, 2);  // MSI-X enable
        for (uint16_t v = 0; v < 2; ++v) {
            const uint64_t at = kMsixTableOffset + v * 16u;
            wr(at, 0xfee0'0000, 4);
            wr(at + 8, 0x40u + v, 4);
            wr(at + 12, 0, 4);  // unmasked
        }
        set_status(kStatusAcknowledge | kStatusDriver);
        for (uint32_t sel = 0; sel < 2; ++sel) {  // accept every feature offered
            common_write(0x00, sel, 4);
            const uint64_t f = common(0x04, 4);
            common_write(0x08, sel, 4);
            common_write(0x0c, f, 4);
        }
        set_status(kStatusAcknowledge | kStatusDriver | kStatusFeaturesOk);
        REQUIRE((status() & kStatusFeaturesOk) != 0);
        common_write(0x10, kConfigVector, 2);
        const QueueConfig qc = drv.config();
        common_write(0x16, 0, 2);
        common_write(0x18, qc.size, 2);
        common_write(0x20, qc.desc.raw, 8);
        common_write(0x28, qc.avail.raw, 8);
        common_write(0x30, qc.used.raw, 8);
        common_write(0x1a, kQueueVector, 2);
        common_write(0x1c, 1, 2);
        set_status(kStatusAcknowledge | kStatusDriver | kStatusFeaturesOk | kStatusDriverOk);
        REQUIRE((status() & kStatusNeedsReset) == 0);
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
    uint64_t common(uint64_t field, size_t len) { return rd(kCommonOffset + field, len); }
    void common_write(uint64_t field, uint64_t v, size_t len) { wr(kCommonOffset + field, v, len); }
    uint8_t status() { return static_cast<uint8_t>(common(0x14, 1)); }
    void set_status(uint8_t s) { common_write(0x14, s, 1); }

    // What virtio_cread reads for the capacity: generation, the field, generation again
    // (§4.1.4.3.1), retried until stable.
    uint64_t capacity() {
        for (;;) {
            const uint64_t g0 = common(0x15, 1);
            const uint64_t cap = rd(kDeviceConfigOffset, 8);
            if (common(0x15, 1) == g0) return cap;
        }
    }
    uint8_t generation() { return static_cast<uint8_t>(common(0x15, 1)); }
    size_t config_irqs() const { return static_cast<size_t>(std::ranges::count(msi->fired, kConfigVector)); }

    // One request, completed: the bytes the device wrote (data then status).
    std::vector<uint8_t> request(uint32_t type, uint64_t sector, std::vector<uint8_t> out_data, uint32_t in_len) {
        auto h = header(type, sector);
        std::vector<std::span<const uint8_t>> readable{std::span<const uint8_t>(h)};
        if (!out_data.empty()) readable.emplace_back(out_data);
        const uint16_t head = drv.add_chain(readable, {in_len + 1});
        drv.kick();
        pci->device().queue_notify(0);
        for (int i = 0; i < 200; ++i) {
            if (auto u = drv.next_used()) {
                CHECK(u->first == head);
                return drv.read_writable(head);
            }
            events.dispatch(50);
        }
        FAIL("the request never completed");
        return {};
    }
    std::vector<uint8_t> read(uint64_t sector, uint32_t len) {
        auto b = request(blk::kTypeIn, sector, {}, len);
        REQUIRE(b.size() == len + 1u);
        CHECK(b.back() == blk::kStatusOk);
        b.pop_back();
        return b;
    }
    uint8_t write(uint64_t sector, std::vector<uint8_t> data) { return request(blk::kTypeOut, sector, data, 0).back(); }

    // What Vmm::replace_drive_image does once the new image is open.
    Result<void> swap_to(const std::string& path) {
        auto f = BlockFile::open(path, false, false);
        if (!f) return std::unexpected(f.error());
        TRY(blk->replace_file(std::move(*f)));
        pci->config_changed();
        return {};
    }
};

}  // namespace

TEST_CASE("virtio-blk swap: capacity and generation change, the config interrupt fires, I/O follows the image") {
    SwapRig rig(1 << 20);
    const auto old_data = pattern(4096, 1), new_data = pattern(4096, 2);
    rig.a.write(0, old_data);
    TempImage b(3 << 20);
    b.write(0, new_data);

    CHECK(rig.capacity() == (1u << 20) / 512);
    CHECK(rig.read(0, 4096) == old_data);
    CHECK(rig.write(8, pattern(512, 3)) == blk::kStatusOk);  // lands in the old image
    const uint8_t gen = rig.generation();
    const size_t fired = rig.msi->fired.size();
    CHECK(rig.config_irqs() == 0);

    REQUIRE(rig.swap_to(b.path()));
    CHECK(rig.capacity() == (3u << 20) / 512);
    CHECK(rig.generation() == static_cast<uint8_t>(gen + 1));
    REQUIRE(rig.msi->fired.size() == fired + 1);
    CHECK(rig.msi->fired.back() == kConfigVector);
    CHECK((rig.rd(kIsrOffset, 1) & kIsrConfig) != 0);
    CHECK(rig.blk->path() == b.path());

    // After: reads and writes hit the new image, past the old end too; the old one is left as
    // it was after the earlier write.
    CHECK(rig.read(0, 4096) == new_data);
    CHECK(rig.write(5000, pattern(512, 4)) == blk::kStatusOk);
    CHECK(b.read(5000 * 512, 512) == pattern(512, 4));
    CHECK(rig.a.read(8 * 512, 512) == pattern(512, 3));
    CHECK(rig.a.read(0, 4096) == old_data);
    CHECK(b.read(8 * 512, 512) == std::vector<uint8_t>(512, 0));
}

TEST_CASE("virtio-blk swap: a missing, locked or empty image is refused and the old one stays") {
    SwapRig rig(1 << 20);
    const auto old_data = pattern(4096, 5);
    rig.a.write(0, old_data);
    const uint8_t gen = rig.generation();
    auto refused = [&](const std::string& path, const std::string& why) {
        CAPTURE(path);
        auto r = rig.swap_to(path);
        REQUIRE_FALSE(r);
        CHECK_MESSAGE(r.error().what().find(why) != std::string::npos, r.error().what());
        CHECK(rig.capacity() == (1u << 20) / 512);
        CHECK(rig.generation() == gen);
        CHECK(rig.config_irqs() == 0);
        CHECK(rig.read(0, 4096) == old_data);
        CHECK(rig.blk->path() == rig.a.path());
    };
    refused("/nonexistent-kestrel/disk.img", "does not exist");
    TempImage empty(0);
    refused(empty.path(), "is empty (0 bytes)");
    TempImage odd(1000);
    refused(odd.path(), "not a multiple of 512");
    // Another user holds the image read-write (QEMU's lock bytes): in use.
    TempImage taken(1 << 20);
    auto holder = BlockFile::open(taken.path(), false, false);
    REQUIRE(holder);
    refused(taken.path(), "in use");
    // A file opened read-only cannot replace a read-write drive's image.
    TempImage other(1 << 20);
    auto ro_file = BlockFile::open(other.path(), true, false);
    REQUIRE(ro_file);
    auto mismatch = rig.blk->replace_file(std::move(*ro_file));
    REQUIRE_FALSE(mismatch);
    CHECK(mismatch.error().what().find("opened as the old one is") != std::string::npos);
    CHECK(rig.read(0, 4096) == old_data);
}

TEST_CASE("virtio-blk swap: the old image's lock goes with it; the new one is locked") {
    SwapRig rig(1 << 20);
    TempImage b(1 << 20);
    CHECK_FALSE(BlockFile::open(rig.a.path(), true, false));  // a writer holds it
    REQUIRE(rig.swap_to(b.path()));
    CHECK_FALSE(BlockFile::open(b.path(), true, false));
    // At once, although the ring may still hold the old open file a while (registered files
    // are put lazily): the swap unlocks it explicitly.
    CHECK(BlockFile::open(rig.a.path(), true, false).has_value());
    // And back (the shim's placeholder round trip): the first image is not ours any more.
    auto back = rig.swap_to(rig.a.path());
    REQUIRE_MESSAGE(back, "swapping back to the first image");
    CHECK(BlockFile::open(b.path(), true, false).has_value());
    CHECK_FALSE(BlockFile::open(rig.a.path(), true, false));
}

TEST_CASE("virtio-blk swap: the image resized in place is re-read") {
    SwapRig rig(1 << 20);
    REQUIRE(::truncate(rig.a.path().c_str(), 2 << 20) == 0);
    const uint8_t gen = rig.generation();
    REQUIRE(rig.blk->refresh_capacity());
    rig.pci->config_changed();
    CHECK(rig.capacity() == (2u << 20) / 512);
    CHECK(rig.generation() == static_cast<uint8_t>(gen + 1));
    CHECK(rig.write(3000, pattern(512, 6)) == blk::kStatusOk);  // past the old end
    CHECK(rig.a.read(3000 * 512, 512) == pattern(512, 6));
    REQUIRE(::truncate(rig.a.path().c_str(), 1000) == 0);
    auto r = rig.blk->refresh_capacity();
    REQUIRE_FALSE(r);
    CHECK(r.error().what().find("not a multiple of 512") != std::string::npos);
    CHECK(rig.capacity() == (2u << 20) / 512);
}

TEST_CASE("virtio-blk swap: a read stuck in the old image's store makes the swap give up; the old image stays" *
          doctest::skip(!HungFuseFile::available())) {
    HungFuseFile fuse(1 << 20);  // declared first: outlives the device
    REQUIRE(fuse.ok());
    GuestMemory mem = make_memory();
    PolledRegistry events;
    struct NoIrq final : VirtioInterrupt {
        void signal_queue(uint16_t) override {}
        void signal_config() override {}
    } irq;
    VirtioBlkOptions o;
    o.path = fuse.path();
    o.read_only = true;
    auto created = VirtioBlk::create(o);
    REQUIRE(created);
    VirtioBlk& dev = **created;
    MockDriver drv(mem, GuestAddress(0), kRingArea, 64);
    REQUIRE(dev.activate(ActivateContext{mem, dev.device_features(), {drv.config()}, irq, events}));
    auto h = header(blk::kTypeIn, 0);
    drv.add_chain({std::span<const uint8_t>(h)}, {4096 + 1});
    drv.kick();
    dev.queue_notify(0);
    REQUIRE(HungFuseFile::wait_for_blocked_io_worker(std::chrono::seconds(5)));

    TempImage b(1 << 20);
    auto file = BlockFile::open(b.path(), true, false);
    REQUIRE(file);
    auto t0 = std::chrono::steady_clock::now();
    auto r = dev.replace_file(std::move(*file), std::chrono::milliseconds(300));
    auto took = std::chrono::steady_clock::now() - t0;
    REQUIRE_FALSE(r);
    CHECK(r.error().what().find("still in host I/O") != std::string::npos);
    CHECK(took < std::chrono::seconds(2));
    CHECK(dev.path() == fuse.path());
    CHECK(dev.capacity_sectors() == (1u << 20) / 512);
    dev.reset();  // gives up on the hung read (kResetLimit), as kestrel's exit would
}
