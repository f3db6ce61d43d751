#include "devices/virtio/blk/virtio_blk.hpp"

#include <doctest/doctest.h>
#include <poll.h>

#include <cstring>
#include <map>
#include <memory>
#include <set>
#include <vector>

#include "devices/virtio/blk/test_temp_file.hpp"
#include "devices/virtio/queue/mock_driver.hpp"
#include "devices/virtio/queue/virtq_spec.hpp"

using namespace kestrel;
using kestrel::test::pattern;
using kestrel::test::TempImage;

namespace {

// Plays the VMM event loop: remembers registrations, polls the fds, runs the callbacks.
class FakeRegistry final : public EventRegistry {
public:
    Result<void> add(int fd, uint32_t events, Callback cb) override {
        if (cbs_.count(fd)) return fail("fd {} already registered", fd);
        cbs_[fd] = {events, std::move(cb)};
        return {};
    }
    Result<void> remove(int fd) override {
        if (!cbs_.erase(fd)) return fail("fd {} not registered", fd);
        return {};
    }
    size_t size() const { return cbs_.size(); }
    // One epoll_wait-like round; returns how many callbacks ran.
    int dispatch(int timeout_ms) {
        std::vector<pollfd> fds;
        for (auto& [fd, reg] : cbs_) fds.push_back(pollfd{fd, static_cast<short>(POLLIN), 0});
        if (::poll(fds.data(), fds.size(), timeout_ms) <= 0) return 0;
        int ran = 0;
        for (auto& p : fds) {
            if (!(p.revents & POLLIN)) continue;
            auto it = cbs_.find(p.fd);
            if (it == cbs_.end()) continue;
            auto cb = it->second.cb;
            cb(static_cast<uint32_t>(p.revents));
            ++ran;
        }
        return ran;
    }

private:
    struct Reg {
        uint32_t events;
        Callback cb;
    };
    std::map<int, Reg> cbs_;
};

class CountingInterrupt final : public VirtioInterrupt {
public:
    void signal_queue(uint16_t q) override { queue[q]++; }
    void signal_config() override { config++; }
    std::map<uint16_t, int> queue;
    int config = 0;
};

std::vector<uint8_t> header(uint32_t type, uint64_t sector) {
    blk::RequestHeader h{type, 0, sector};
    std::vector<uint8_t> v(sizeof h);
    std::memcpy(v.data(), &h, sizeof h);
    return v;
}

std::vector<uint8_t> segment(uint64_t sector, uint32_t n, uint32_t flags) {
    blk::DiscardWriteZeroesSegment s{sector, n, flags};
    std::vector<uint8_t> v(sizeof s);
    std::memcpy(v.data(), &s, sizeof s);
    return v;
}

constexpr uint64_t kAreaPerQueue = 8 << 20;

GuestMemory make_memory(uint16_t queues) {
    GuestRegionSpec spec{GuestAddress(0), kAreaPerQueue * queues};
    auto m = GuestMemory::create(std::span(&spec, 1));
    REQUIRE(m.has_value());
    return std::move(*m);
}

// A device on a temp image, activated with mock drivers on every queue.
struct Rig {
    TempImage img;
    GuestMemory mem;
    FakeRegistry events;
    CountingInterrupt irq;
    std::unique_ptr<VirtioBlk> dev;
    std::vector<std::unique_ptr<MockDriver>> drivers;

    explicit Rig(uint64_t image_bytes, VirtioBlkOptions opts = {}, uint64_t drop_features = 0,
                 uint16_t queue_size = 64)
        : img(image_bytes), mem(make_memory(opts.num_queues)) {
        opts.path = img.path();
        auto d = VirtioBlk::create(opts);
        REQUIRE(d.has_value());
        dev = std::move(*d);
        std::vector<QueueConfig> qs;
        for (uint16_t q = 0; q < opts.num_queues; ++q) {
            drivers.push_back(std::make_unique<MockDriver>(mem, GuestAddress(q * kAreaPerQueue),
                                                           kAreaPerQueue, queue_size));
            qs.push_back(drivers.back()->config());
        }
        auto r = dev->activate(ActivateContext{mem, dev->device_features() & ~drop_features, qs, irq, events});
        REQUIRE(r.has_value());
    }

    // Offers one request on queue q and notifies; returns its head.
    uint16_t send(uint16_t q, std::vector<std::vector<uint8_t>> readable, std::vector<uint32_t> writable,
                  bool notify = true) {
        std::vector<std::span<const uint8_t>> r;
        for (auto& v : readable) r.emplace_back(v);
        uint16_t head = drivers[q]->add_chain(r, writable);
        // Like Linux's virtqueue_enable_cb: interrupt me once anything past what I consumed.
        drivers[q]->set_used_event(drivers[q]->used_idx());
        if (notify) {
            drivers[q]->kick();
            dev->queue_notify(q);
        }
        return head;
    }

    // Runs the event loop until queue q has returned a chain.
    std::pair<uint16_t, uint32_t> wait_used(uint16_t q) {
        for (int i = 0; i < 200; ++i) {
            if (auto u = drivers[q]->next_used()) return *u;
            events.dispatch(50);
        }
        FAIL("no used buffer on queue " << q);
        return {0xffff, 0};
    }

    // Sends, waits, returns the status byte (and checks the used head).
    uint8_t status_of(uint16_t q, std::vector<std::vector<uint8_t>> readable,
                      std::vector<uint32_t> writable, uint32_t* used_len = nullptr) {
        uint32_t total = 0;
        for (uint32_t w : writable) total += w;
        uint16_t head = send(q, std::move(readable), writable);
        auto [h, len] = wait_used(q);
        CHECK(h == head);
        if (used_len) *used_len = len;
        auto bytes = drivers[q]->read_writable(head);
        REQUIRE(bytes.size() == total);
        return bytes.back();
    }
};

uint64_t m(const BlkMetrics::Counter& c) { return BlkMetrics::get(c); }

}  // namespace

TEST_CASE("VirtioBlk: features and config space (virtio 1.2 §5.2.3, §5.2.4)") {
    VirtioBlkOptions o;
    o.num_queues = 3;
    o.queue_size = 128;
    Rig rig(10 << 20, o);
    VirtioBlk& d = *rig.dev;
    CHECK(d.device_type() == 2);
    CHECK(d.num_queues() == 3);
    CHECK(d.max_queue_size() == 128);
    uint64_t f = d.device_features();
    for (uint64_t bit : {virtq::kFeatureVersion1, virtq::kFeatureEventIdx, virtq::kFeatureIndirectDesc,
                         blk::kFeatureSegMax, blk::kFeatureBlkSize, blk::kFeatureFlush, blk::kFeatureMq,
                         blk::kFeatureDiscard, blk::kFeatureWriteZeroes})
        CHECK((f & bit) != 0);
    CHECK((f & blk::kFeatureRo) == 0);

    std::vector<uint8_t> cfg(0x60, 0xaa);
    d.read_config(0, cfg);
    auto u64 = [&](size_t off) { uint64_t v; std::memcpy(&v, &cfg[off], 8); return v; };
    auto u32 = [&](size_t off) { uint32_t v; std::memcpy(&v, &cfg[off], 4); return v; };
    auto u16 = [&](size_t off) { uint16_t v; std::memcpy(&v, &cfg[off], 2); return v; };
    CHECK(u64(0x00) == (10 << 20) / 512);
    CHECK(u32(0x0c) == 126);  // seg_max
    CHECK(u32(0x14) == 512);  // blk_size
    CHECK(u16(0x22) == 3);    // num_queues
    CHECK(u32(0x24) == VirtioBlk::kMaxDiscardSectors);
    CHECK(u32(0x28) == 1);    // max_discard_seg
    CHECK(u32(0x2c) == 8);
    CHECK(u32(0x34) == 1);    // max_write_zeroes_seg
    CHECK(cfg[0x38] == 1);    // write_zeroes_may_unmap
    CHECK(cfg[0x50] == 0);    // past our struct: zero
    // An unaligned partial read sees the same bytes.
    std::vector<uint8_t> part(3);
    d.read_config(0x22, part);
    CHECK(part[0] == 3);
    CHECK(part[1] == 0);
    CHECK(part[2] == cfg[0x24]);
}

TEST_CASE("VirtioBlk: create() rejects bad options") {
    TempImage img(4096);
    VirtioBlkOptions o;
    o.path = img.path();
    o.serial = std::string(21, 'x');
    CHECK_FALSE(VirtioBlk::create(o).has_value());
    o.serial = "ok";
    o.queue_size = 100;
    CHECK_FALSE(VirtioBlk::create(o).has_value());
    o.queue_size = 256;
    o.num_queues = 0;
    CHECK_FALSE(VirtioBlk::create(o).has_value());
    o.num_queues = 1;
    o.path = "/nonexistent.img";
    auto r = VirtioBlk::create(o);
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error().what().find("does not exist") != std::string::npos);
}

TEST_CASE("VirtioBlk: write sectors, read them back, flush") {
    Rig rig(1 << 20);
    auto data = pattern(8 * 512, 42);
    uint32_t len = 99;
    CHECK(rig.status_of(0, {header(blk::kTypeOut, 10), data}, {1}, &len) == blk::kStatusOk);
    CHECK(len == 1);
    CHECK(rig.img.read(10 * 512, data.size()) == data);

    // Read back with the data split over three writable descriptors.
    uint16_t head = rig.send(0, {header(blk::kTypeIn, 10)}, {1000, 3096, 1});
    auto [h, used] = rig.wait_used(0);
    CHECK(h == head);
    CHECK(used == 4097);
    auto back = rig.drivers[0]->read_writable(head);
    REQUIRE(back.size() == 4097);
    CHECK(back.back() == blk::kStatusOk);
    back.pop_back();
    CHECK(back == data);

    CHECK(rig.status_of(0, {header(blk::kTypeFlush, 0)}, {1}) == blk::kStatusOk);
    const BlkMetrics& mt = rig.dev->metrics();
    CHECK(m(mt.writes) == 1);
    CHECK(m(mt.reads) == 1);
    CHECK(m(mt.flushes) == 1);
    CHECK(m(mt.bytes_written) == 4096);
    CHECK(m(mt.bytes_read) == 4096);
    CHECK(m(mt.io_errors) == 0);
    CHECK(rig.irq.queue[0] >= 3);
}

TEST_CASE("VirtioBlk: header and data may be split anywhere (§2.6.4 framing)") {
    Rig rig(1 << 20);
    auto hdr = header(blk::kTypeOut, 3);
    auto data = pattern(1024, 7);
    std::vector<uint8_t> a(hdr.begin(), hdr.begin() + 5);
    std::vector<uint8_t> b(hdr.begin() + 5, hdr.end());
    b.insert(b.end(), data.begin(), data.begin() + 100);
    std::vector<uint8_t> c(data.begin() + 100, data.end());
    CHECK(rig.status_of(0, {a, b, c}, {1}) == blk::kStatusOk);
    CHECK(rig.img.read(3 * 512, 1024) == data);
    // IN whose status byte shares a descriptor with the data.
    uint16_t head = rig.send(0, {header(blk::kTypeIn, 3)}, {1025});
    rig.wait_used(0);
    auto back = rig.drivers[0]->read_writable(head);
    CHECK(back.back() == blk::kStatusOk);
    back.pop_back();
    CHECK(back == data);
}

TEST_CASE("VirtioBlk: GET_ID returns the serial, NUL-padded to 20 bytes") {
    VirtioBlkOptions o;
    o.serial = "kestrel-disk-7";
    Rig rig(1 << 20, o);
    uint16_t head = rig.send(0, {header(blk::kTypeGetId, 0)}, {20, 1});
    auto [h, used] = rig.wait_used(0);
    CHECK(used == 21);
    auto id = rig.drivers[0]->read_writable(head);
    REQUIRE(id.size() == 21);
    CHECK(std::string(id.begin(), id.begin() + 14) == "kestrel-disk-7");
    for (size_t i = 14; i < 20; ++i) CHECK(id[i] == 0);
    CHECK(id[20] == blk::kStatusOk);
    CHECK(m(rig.dev->metrics().get_ids) == 1);
}

TEST_CASE("VirtioBlk: discard frees space of a sparse image; write zeroes zeroes") {
    Rig rig(8 << 20);
    auto data = pattern(8 << 20, 3);
    rig.img.write(0, data);
    uint64_t before = rig.img.allocated_blocks();
    REQUIRE(before >= (8 << 20) / 512);

    // 2 MiB at sector 2048 (1 MiB).
    CHECK(rig.status_of(0, {header(blk::kTypeDiscard, 0), segment(2048, 4096, 0)}, {1}) == blk::kStatusOk);
    uint64_t after = rig.img.allocated_blocks();
    CHECK(after <= before - 4096);
    CHECK(rig.img.read(1 << 20, 2 << 20) == std::vector<uint8_t>(2 << 20, 0));
    CHECK(rig.img.read((1 << 20) - 512, 512) ==
          std::vector<uint8_t>(data.begin() + (1 << 20) - 512, data.begin() + (1 << 20)));

    // Write zeroes without unmap: zeros, space kept.
    CHECK(rig.status_of(0, {header(blk::kTypeWriteZeroes, 0), segment(8192, 100, 0)}, {1}) == blk::kStatusOk);
    CHECK(rig.img.read(8192 * 512, 100 * 512) == std::vector<uint8_t>(100 * 512, 0));
    CHECK(rig.img.allocated_blocks() >= after);
    // With unmap: zeros, may deallocate.
    CHECK(rig.status_of(0, {header(blk::kTypeWriteZeroes, 0), segment(10240, 2048, blk::kSegmentFlagUnmap)}, {1}) ==
          blk::kStatusOk);
    CHECK(rig.img.read(10240 * 512, 2048 * 512) == std::vector<uint8_t>(2048 * 512, 0));
    CHECK(rig.img.read(12288 * 512, 512) ==
          std::vector<uint8_t>(data.begin() + 12288 * 512, data.begin() + 12289 * 512));
    CHECK(m(rig.dev->metrics().discards) == 1);
    CHECK(m(rig.dev->metrics().write_zeroes) == 2);
}

TEST_CASE("VirtioBlk: a read-only disk refuses writes with IOERR and reads fine") {
    TempImage img(1 << 20);
    auto data = pattern(512, 9);
    img.write(512, data);
    VirtioBlkOptions o;
    o.read_only = true;
    Rig rig(1 << 20, o);
    rig.img.write(512, data);
    CHECK((rig.dev->device_features() & blk::kFeatureRo) != 0);
    CHECK((rig.dev->device_features() & blk::kFeatureDiscard) == 0);
    CHECK(rig.status_of(0, {header(blk::kTypeOut, 0), pattern(512, 1)}, {1}) == blk::kStatusIoErr);
    CHECK(rig.img.read(0, 512) == std::vector<uint8_t>(512, 0));  // nothing written
    CHECK(m(rig.dev->metrics().read_only) == 1);
    // DISCARD / WRITE_ZEROES are not offered on a read-only disk: UNSUPP.
    CHECK(rig.status_of(0, {header(blk::kTypeDiscard, 0), segment(0, 1, 0)}, {1}) == blk::kStatusUnsupp);
    CHECK(rig.status_of(0, {header(blk::kTypeWriteZeroes, 0), segment(0, 1, 0)}, {1}) == blk::kStatusUnsupp);
    uint16_t head = rig.send(0, {header(blk::kTypeIn, 1)}, {512, 1});
    rig.wait_used(0);
    auto back = rig.drivers[0]->read_writable(head);
    CHECK(back.back() == blk::kStatusOk);
    back.pop_back();
    CHECK(back == data);
    CHECK(rig.status_of(0, {header(blk::kTypeFlush, 0)}, {1}) == blk::kStatusOk);
}

TEST_CASE("VirtioBlk: bad requests get the right status and are counted") {
    Rig rig(1 << 20);  // 2048 sectors
    const BlkMetrics& mt = rig.dev->metrics();
    auto hdr = header(blk::kTypeOut, 0);

    SUBCASE("header shorter than 16 bytes") {
        CHECK(rig.status_of(0, {std::vector<uint8_t>(hdr.begin(), hdr.begin() + 12)}, {1}) == blk::kStatusIoErr);
        CHECK(m(mt.bad_header) == 1);
    }
    SUBCASE("no status byte: returned with len 0") {
        uint16_t head = rig.send(0, {header(blk::kTypeFlush, 0)}, {});
        auto [h, len] = rig.wait_used(0);
        CHECK(h == head);
        CHECK(len == 0);
        CHECK(m(mt.missing_status) == 1);
    }
    SUBCASE("data not a multiple of 512") {
        CHECK(rig.status_of(0, {header(blk::kTypeIn, 0)}, {1000, 1}) == blk::kStatusIoErr);
        CHECK(rig.status_of(0, {header(blk::kTypeOut, 0), pattern(700, 1)}, {1}) == blk::kStatusIoErr);
        CHECK(m(mt.bad_length) == 2);
    }
    SUBCASE("sector range past capacity, overflow-safe") {
        CHECK(rig.status_of(0, {header(blk::kTypeIn, 2047)}, {1024, 1}) == blk::kStatusIoErr);
        CHECK(rig.status_of(0, {header(blk::kTypeOut, 2048), pattern(512, 1)}, {1}) == blk::kStatusIoErr);
        CHECK(rig.status_of(0, {header(blk::kTypeIn, UINT64_MAX)}, {512, 1}) == blk::kStatusIoErr);
        CHECK(rig.status_of(0, {header(blk::kTypeIn, UINT64_MAX / 512 + 1)}, {512, 1}) == blk::kStatusIoErr);
        CHECK(m(mt.out_of_range) == 4);
        // The last sector itself is fine.
        CHECK(rig.status_of(0, {header(blk::kTypeIn, 2047)}, {512, 1}) == blk::kStatusOk);
    }
    SUBCASE("unknown and unoffered types are UNSUPP") {
        CHECK(rig.status_of(0, {header(99, 0)}, {1}) == blk::kStatusUnsupp);
        CHECK(rig.status_of(0, {header(blk::kTypeGetLifetime, 0)}, {16, 1}) == blk::kStatusUnsupp);
        CHECK(rig.status_of(0, {header(blk::kTypeSecureErase, 0), segment(0, 1, 0)}, {1}) == blk::kStatusUnsupp);
        CHECK(m(mt.unsupported) == 3);
    }
    SUBCASE("discard / write-zeroes segment checks") {
        auto two = segment(0, 8, 0);
        auto second = segment(16, 8, 0);
        two.insert(two.end(), second.begin(), second.end());
        CHECK(rig.status_of(0, {header(blk::kTypeDiscard, 0), two}, {1}) == blk::kStatusUnsupp);
        CHECK(rig.status_of(0, {header(blk::kTypeDiscard, 0), std::vector<uint8_t>(8, 0)}, {1}) ==
              blk::kStatusIoErr);
        CHECK(rig.status_of(0, {header(blk::kTypeDiscard, 0)}, {1}) == blk::kStatusIoErr);
        // §5.2.6.2: unmap on DISCARD and unknown flags are UNSUPP.
        CHECK(rig.status_of(0, {header(blk::kTypeDiscard, 0), segment(0, 8, blk::kSegmentFlagUnmap)}, {1}) ==
              blk::kStatusUnsupp);
        CHECK(rig.status_of(0, {header(blk::kTypeWriteZeroes, 0), segment(0, 8, 2)}, {1}) == blk::kStatusUnsupp);
        CHECK(m(mt.bad_segment) == 5);
        CHECK(rig.status_of(0, {header(blk::kTypeDiscard, 0), segment(2040, 9, 0)}, {1}) == blk::kStatusIoErr);
        CHECK(rig.status_of(0, {header(blk::kTypeWriteZeroes, 0), segment(UINT64_MAX, 1, 0)}, {1}) ==
              blk::kStatusIoErr);
        CHECK(m(mt.out_of_range) == 2);
    }
    SUBCASE("malformed chain: used len 0, device carries on") {
        virtq::Desc bad{rig.drivers[0]->alloc(16).raw, 16, virtq::kDescFNext, 500};  // next >= size
        uint16_t head = rig.drivers[0]->add_raw_chain(40, std::span(&bad, 1));
        rig.drivers[0]->kick();
        rig.dev->queue_notify(0);
        auto [h, len] = rig.wait_used(0);
        CHECK(h == head);
        CHECK(len == 0);
        CHECK(m(mt.malformed_chains) == 1);
        CHECK_FALSE(rig.dev->needs_reset());
        CHECK(rig.status_of(0, {header(blk::kTypeFlush, 0)}, {1}) == blk::kStatusOk);
    }
    CHECK(m(mt.io_errors) == 0);
}

TEST_CASE("VirtioBlk: DISCARD / WRITE_ZEROES not negotiated are UNSUPP") {
    Rig rig(1 << 20, {}, blk::kFeatureDiscard | blk::kFeatureWriteZeroes);
    CHECK(rig.status_of(0, {header(blk::kTypeDiscard, 0), segment(0, 8, 0)}, {1}) == blk::kStatusUnsupp);
    CHECK(rig.status_of(0, {header(blk::kTypeWriteZeroes, 0), segment(0, 8, 0)}, {1}) == blk::kStatusUnsupp);
}

TEST_CASE("VirtioBlk: one notify processes every chain as one batch") {
    Rig rig(1 << 20);
    std::vector<uint16_t> heads;
    for (uint64_t i = 0; i < 16; ++i)
        heads.push_back(rig.send(0, {header(blk::kTypeOut, i * 8), pattern(4096, static_cast<uint8_t>(i))}, {1},
                                 false));
    rig.drivers[0]->kick();
    rig.dev->queue_notify(0);
    std::set<uint16_t> done;
    for (int i = 0; i < 16; ++i) done.insert(rig.wait_used(0).first);
    CHECK(done == std::set<uint16_t>(heads.begin(), heads.end()));
    CHECK(m(rig.dev->metrics().batches) == 1);
    CHECK(m(rig.dev->metrics().writes) == 16);
    CHECK(rig.irq.queue[0] <= 2);  // once per batch (+ once for stragglers off the ring fd)
    CHECK(rig.irq.queue[0] >= 1);
    for (uint64_t i = 0; i < 16; ++i) CHECK(rig.img.read(i * 4096, 4096) == pattern(4096, static_cast<uint8_t>(i)));
}

TEST_CASE("VirtioBlk: multi-queue, each queue its own ring and interrupt") {
    VirtioBlkOptions o;
    o.num_queues = 4;
    Rig rig(1 << 20, o);
    CHECK(rig.events.size() == 4);
    for (uint16_t q = 0; q < 4; ++q)
        CHECK(rig.status_of(q, {header(blk::kTypeOut, q * 16), pattern(2048, static_cast<uint8_t>(q))}, {1}) ==
              blk::kStatusOk);
    for (uint16_t q = 0; q < 4; ++q) {
        uint16_t head = rig.send(3 - q, {header(blk::kTypeIn, q * 16)}, {2048, 1});
        rig.wait_used(static_cast<uint16_t>(3 - q));
        auto back = rig.drivers[3 - q]->read_writable(head);
        back.pop_back();
        CHECK(back == pattern(2048, static_cast<uint8_t>(q)));
    }
    for (uint16_t q = 0; q < 4; ++q) CHECK(rig.irq.queue[q] == 2);
    CHECK(m(rig.dev->metrics().batches) == 8);
}

TEST_CASE("VirtioBlk: O_DIRECT bounces unaligned guest buffers") {
    VirtioBlkOptions o;
    o.direct = true;
    TempImage probe(4096);
    if (!BlockFile::open(probe.path(), false, true)) {
        MESSAGE("O_DIRECT unsupported on this file system: skipped");
        return;
    }
    Rig rig(1 << 20, o);
    auto data = pattern(4096, 77);
    CHECK(rig.status_of(0, {header(blk::kTypeOut, 8), data}, {1}) == blk::kStatusOk);
    uint16_t head = rig.send(0, {header(blk::kTypeIn, 8)}, {4096, 1});
    rig.wait_used(0);
    auto back = rig.drivers[0]->read_writable(head);
    CHECK(back.back() == blk::kStatusOk);
    back.pop_back();
    CHECK(back == data);
    CHECK(rig.img.read(8 * 512, 4096) == data);
    CHECK(m(rig.dev->metrics().bounced) >= 1);
}

TEST_CASE("VirtioBlk: reset quiesces, unregisters, and the device can be activated again") {
    Rig rig(1 << 20);
    CHECK(rig.events.size() == 1);
    rig.send(0, {header(blk::kTypeFlush, 0)}, {1}, true);
    rig.dev->reset();
    CHECK(rig.events.size() == 0);
    rig.dev->queue_notify(0);  // ignored: no queue any more
    auto used_before = rig.drivers[0]->used_idx();

    MockDriver fresh(rig.mem, GuestAddress(0), kAreaPerQueue, 64);
    std::vector<QueueConfig> qs{fresh.config()};
    REQUIRE(rig.dev->activate(ActivateContext{rig.mem, rig.dev->device_features(), qs, rig.irq, rig.events})
                .has_value());
    CHECK(rig.events.size() == 1);
    CHECK(used_before <= 1);
    std::vector<uint8_t> h = header(blk::kTypeFlush, 0);
    uint16_t head = fresh.add_chain({std::span<const uint8_t>(h)}, {1});
    fresh.kick();
    rig.dev->queue_notify(0);
    std::optional<std::pair<uint16_t, uint32_t>> u;
    for (int i = 0; i < 100 && !(u = fresh.next_used()); ++i) rig.events.dispatch(50);
    REQUIRE(u.has_value());
    CHECK(u->first == head);
}
