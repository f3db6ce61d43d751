#include "devices/virtio/blk/virtio_blk.hpp"

#include <doctest/doctest.h>
#include <fcntl.h>
#include <poll.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "devices/virtio/blk/test_hung_fuse.hpp"
#include "devices/virtio/blk/test_temp_file.hpp"
#include "devices/virtio/queue/mock_driver.hpp"
#include "devices/virtio/queue/virtq_spec.hpp"

using namespace kestrel;
using kestrel::test::direct_io_dir;
using kestrel::test::direct_io_possible;
using kestrel::test::HungFuseFile;
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

    // A `direct` rig's image lives where O_DIRECT works (direct_io_dir()).
    explicit Rig(uint64_t image_bytes, VirtioBlkOptions opts = {}, uint64_t drop_features = 0,
                 uint16_t queue_size = 64)
        : img(image_bytes, opts.direct ? direct_io_dir() : std::string()), mem(make_memory(opts.num_queues)) {
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

// This process's resident set (VmRSS) or its high-water mark (VmHWM), from /proc/self/status.
uint64_t status_kib(const std::string& key) {
    std::ifstream f("/proc/self/status");
    std::string line;
    while (std::getline(f, line))
        if (line.rfind(key + ":", 0) == 0) return std::stoull(line.substr(key.size() + 1));
    return 0;
}
// Lowers VmHWM to the current VmRSS (clear_refs "5", Linux 4.0), so a later VmHWM is the peak
// of what ran in between.
bool reset_peak_rss() {
    int fd = ::open("/proc/self/clear_refs", O_WRONLY | O_CLOEXEC);
    if (fd < 0) return false;
    bool ok = ::write(fd, "5", 1) == 1;
    ::close(fd);
    return ok;
}

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
    CHECK((f & blk::kFeatureSizeMax) != 0);
    CHECK(u64(0x00) == (10 << 20) / 512);
    CHECK(u32(0x08) == VirtioBlk::kSizeMax);
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
    auto data = pattern(512, 9);
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
    CHECK(rig.events.size() == 5);  // 4 rings and the rate limiter's timer
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

TEST_CASE("VirtioBlk: O_DIRECT bounces unaligned guest buffers" * doctest::skip(!direct_io_possible())) {
    VirtioBlkOptions o;
    o.direct = true;
    REQUIRE_FALSE(direct_io_dir().empty());
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
    CHECK(rig.events.size() == 2);  // the ring and the rate limiter's timer
    rig.send(0, {header(blk::kTypeFlush, 0)}, {1}, true);
    rig.dev->reset();
    CHECK(rig.events.size() == 0);
    // Whether the flush made it to the used ring before the reset or was dropped by it,
    // nothing reaches the old ring afterwards: not a notify, not a late completion.
    auto used_at_reset = rig.drivers[0]->used_idx();
    rig.send(0, {header(blk::kTypeFlush, 0)}, {1}, true);  // notify ignored: no queue any more
    for (int i = 0; i < 5; ++i) rig.events.dispatch(20);
    CHECK(rig.drivers[0]->used_idx() == used_at_reset);
    CHECK(m(rig.dev->metrics().stuck_resets) == 0);

    MockDriver fresh(rig.mem, GuestAddress(0), kAreaPerQueue, 64);
    std::vector<QueueConfig> qs{fresh.config()};
    REQUIRE(rig.dev->activate(ActivateContext{rig.mem, rig.dev->device_features(), qs, rig.irq, rig.events})
                .has_value());
    CHECK(rig.events.size() == 2);
    std::vector<uint8_t> h = header(blk::kTypeFlush, 0);
    uint16_t head = fresh.add_chain({std::span<const uint8_t>(h)}, {1});
    fresh.kick();
    rig.dev->queue_notify(0);
    std::optional<std::pair<uint16_t, uint32_t>> u;
    for (int i = 0; i < 100 && !(u = fresh.next_used()); ++i) rig.events.dispatch(50);
    REQUIRE(u.has_value());
    CHECK(u->first == head);
}

namespace {

// The worst a guest can do to a `direct` disk's host memory: every request as long as the
// device allows (seg_max x size_max), misaligned so that it must be bounced, and all of
// them pointing at the same 16 KiB of guest memory (each of the 254 segments of each
// request is the same buffer, at an odd offset). One indirect table per request.
struct Flood {
    static constexpr uint32_t kSegments = VirtioBlk::kMaxSegMax;
    static constexpr uint32_t kSegBytes = VirtioBlk::kSizeMax;
    static constexpr uint64_t kBytes = uint64_t{kSegments} * kSegBytes;
    static_assert(kBytes == VirtioBlk::kMaxDataBytes);

    Rig& rig;
    GuestAddress buf;  // the shared buffer starts at buf + 8: misaligned for O_DIRECT
    GuestAddress hdr;
    std::vector<GuestAddress> status;

    explicit Flood(Rig& r) : rig(r) {
        buf = rig.drivers[0]->alloc(kSegBytes + 64);
        hdr = rig.drivers[0]->alloc(16);
    }

    // Queues `n` requests of `type` at sector 0 (descriptor heads 0..n-1), not yet notified.
    void queue(uint32_t type, uint16_t n) {
        auto h = header(type, 0);
        REQUIRE(rig.mem.write(hdr, h).has_value());
        uint16_t data_flags = type == blk::kTypeIn ? virtq::kDescFWrite : 0;
        status.clear();
        for (uint16_t i = 0; i < n; ++i) {
            GuestAddress st = rig.drivers[0]->alloc(1);
            uint8_t unset = 0xee;
            REQUIRE(rig.mem.write(st, std::span(&unset, 1)).has_value());
            status.push_back(st);
            std::vector<virtq::Desc> t;
            t.push_back(virtq::Desc{hdr.raw, 16, virtq::kDescFNext, 1});
            for (uint16_t s = 0; s < kSegments; ++s)
                t.push_back(virtq::Desc{buf.raw + 8, kSegBytes, static_cast<uint16_t>(data_flags | virtq::kDescFNext),
                                        static_cast<uint16_t>(s + 2)});
            t.push_back(virtq::Desc{st.raw, 1, virtq::kDescFWrite, 0});
            GuestAddress table = rig.drivers[0]->write_indirect_table(t);
            virtq::Desc d{table.raw, static_cast<uint32_t>(t.size() * sizeof(virtq::Desc)), virtq::kDescFIndirect, 0};
            rig.drivers[0]->add_raw_chain(i, std::span(&d, 1));
        }
    }

    // Notifies once, waits for all `n`, checks every used length and status byte.
    void run(uint16_t n, uint32_t want_len) {
        rig.drivers[0]->set_used_event(rig.drivers[0]->used_idx());
        rig.drivers[0]->kick();
        rig.dev->queue_notify(0);
        std::set<uint16_t> heads;
        for (uint16_t i = 0; i < n; ++i) {
            auto [head, len] = rig.wait_used(0);
            heads.insert(head);
            CHECK(len == want_len);
        }
        CHECK(heads.size() == n);
        for (GuestAddress st : status) CHECK(rig.mem.read_obj<uint8_t>(st).value() == blk::kStatusOk);
    }

    std::vector<uint8_t> bytes(uint64_t off, size_t len) {
        std::vector<uint8_t> v(len);
        REQUIRE(rig.mem.read(buf + off, v).has_value());
        return v;
    }
};

}  // namespace

TEST_CASE("VirtioBlk: a flood of maximal misaligned requests on one guest page stays within the bounce pool" *
          doctest::skip(!direct_io_possible())) {
    VirtioBlkOptions o;
    o.direct = true;
    REQUIRE_FALSE(direct_io_dir().empty());
    constexpr uint16_t kQueue = 64;
    Rig rig(8 << 20, o, 0, kQueue);
    // The disk repeats one 16 KiB block, so every segment of every read brings the same bytes
    // and the shared buffer's final content does not depend on completion order.
    auto block = pattern(Flood::kSegBytes, 31);
    std::vector<uint8_t> disk;
    for (uint32_t s = 0; s < Flood::kSegments; ++s) disk.insert(disk.end(), block.begin(), block.end());
    rig.img.write(0, disk);

    Flood flood(rig);
    flood.queue(blk::kTypeIn, kQueue);
    // Guest memory and the rings are touched: what grows from here is the device's doing.
    REQUIRE(reset_peak_rss());
    uint64_t rss_before = status_kib("VmRSS") << 10;
    flood.run(kQueue, static_cast<uint32_t>(Flood::kBytes + 1));
    uint64_t peak = status_kib("VmHWM") << 10;
    const BlkMetrics& mt = rig.dev->metrics();
    CHECK(m(mt.bounced) == kQueue);
    CHECK(m(mt.io_errors) == 0);
    // Each request fills the whole pool, so all but the first waited for the one before it.
    CHECK(m(mt.budget_waits) == kQueue - 1u);
    // Before the pool each request had its own 4 MiB buffer: 256 MiB here. Now the pool plus
    // descriptor copies and iovecs; 4 MiB of slack for the allocator and the test itself.
    MESSAGE("peak RSS growth over the read flood: " << (peak - rss_before) / 1024 << " KiB");
    CHECK(peak - rss_before <= VirtioBlk::kBouncePoolBytes + (4 << 20));
    CHECK(flood.bytes(0, 8) == std::vector<uint8_t>(8, 0));  // nothing before the buffer
    CHECK(flood.bytes(8, Flood::kSegBytes) == block);
    CHECK(flood.bytes(8 + Flood::kSegBytes, 56) == std::vector<uint8_t>(56, 0));  // nor after it

    // Writes the same way: each of the 254 segments copies the one buffer to the disk.
    auto mine = pattern(Flood::kSegBytes, 77);
    REQUIRE(rig.mem.write(flood.buf + 8, mine).has_value());
    flood.queue(blk::kTypeOut, 16);
    flood.run(16, 1);
    CHECK(m(mt.bounced) == kQueue + 16u);
    auto after = rig.img.read(0, Flood::kBytes);
    REQUIRE(after.size() == Flood::kBytes);
    for (uint32_t s = 0; s < Flood::kSegments; ++s)
        CHECK(std::equal(mine.begin(), mine.end(), after.begin() + static_cast<long>(s) * Flood::kSegBytes));
    CHECK(rig.img.read(Flood::kBytes, 512) == std::vector<uint8_t>(512, 0));  // nothing past the request
}

TEST_CASE("VirtioBlk: chains with thousands of descriptors wait for the descriptor budget, then all complete") {
    // FLUSH requests padded with zero-length descriptors (§2.7.4 allows them) up to the
    // indirect-table cap: each holds ~4096 descriptor copies while in flight.
    constexpr uint16_t kRequests = 32;
    Rig rig(1 << 20);
    GuestAddress hdr = rig.drivers[0]->alloc(16);
    auto h = header(blk::kTypeFlush, 0);
    REQUIRE(rig.mem.write(hdr, h).has_value());
    constexpr uint32_t kDescs = DescriptorChain::kMaxIndirectDescriptors;
    for (uint16_t i = 0; i < kRequests; ++i) {
        GuestAddress st = rig.drivers[0]->alloc(1);
        std::vector<virtq::Desc> t;
        t.push_back(virtq::Desc{hdr.raw, 16, virtq::kDescFNext, 1});
        for (uint32_t k = 1; k + 1 < kDescs; ++k)
            t.push_back(virtq::Desc{0, 0, virtq::kDescFNext, static_cast<uint16_t>(k + 1)});
        t.push_back(virtq::Desc{st.raw, 1, virtq::kDescFWrite, 0});
        GuestAddress table = rig.drivers[0]->write_indirect_table(t);
        virtq::Desc d{table.raw, static_cast<uint32_t>(t.size() * sizeof(virtq::Desc)), virtq::kDescFIndirect, 0};
        rig.drivers[0]->add_raw_chain(i, std::span(&d, 1));
    }
    rig.drivers[0]->kick();
    rig.dev->queue_notify(0);
    std::set<uint16_t> heads;
    for (uint16_t i = 0; i < kRequests; ++i) {
        auto [head, len] = rig.wait_used(0);
        heads.insert(head);
        CHECK(len == 1);
    }
    CHECK(heads.size() == kRequests);
    const BlkMetrics& mt = rig.dev->metrics();
    CHECK(m(mt.flushes) == kRequests);
    CHECK(m(mt.io_errors) == 0);
    // 16384 / 4096: at most 4 such chains in flight; the rest waited their turn.
    static_assert(VirtioBlk::kMaxHeldDescriptors / kDescs < kRequests);
    CHECK(m(mt.budget_waits) >= 1);
}

TEST_CASE("VirtioBlk: reset gives up on a hung backing store after kResetLimit; activation is refused until it "
          "drains, and its late completion never reaches the used ring" *
          doctest::skip(!HungFuseFile::available())) {
    HungFuseFile fuse(1 << 20);  // declared first: outlives the device
    REQUIRE(fuse.ok());
    GuestMemory mem = make_memory(2);
    FakeRegistry events;
    CountingInterrupt irq;
    VirtioBlkOptions o;
    o.path = fuse.path();
    auto created = VirtioBlk::create(o);
    REQUIRE(created.has_value());
    VirtioBlk& dev = **created;
    MockDriver old(mem, GuestAddress(0), kAreaPerQueue, 64);
    REQUIRE(dev.activate(ActivateContext{mem, dev.device_features(), {old.config()}, irq, events}).has_value());

    // A 4 KiB read whose status byte starts as 0xee, so a late status write would show.
    GuestAddress hdr = old.alloc(16), data = old.alloc(4096), st = old.alloc(1);
    auto h = header(blk::kTypeIn, 0);
    REQUIRE(mem.write(hdr, h).has_value());
    REQUIRE(mem.write_obj<uint8_t>(st, 0xee).has_value());
    virtq::Desc chain[3] = {{hdr.raw, 16, virtq::kDescFNext, 1},
                            {data.raw, 4096, virtq::kDescFWrite | virtq::kDescFNext, 2},
                            {st.raw, 1, virtq::kDescFWrite, 0}};
    old.add_raw_chain(0, chain);
    old.kick();
    dev.queue_notify(0);
    REQUIRE(fuse.wait_for_reads(1, std::chrono::seconds(5)));
    REQUIRE(HungFuseFile::wait_for_blocked_io_worker(std::chrono::seconds(5)));

    auto t0 = std::chrono::steady_clock::now();
    dev.reset();
    auto took = std::chrono::steady_clock::now() - t0;
    MESSAGE("reset with a hung read took " << std::chrono::duration_cast<std::chrono::milliseconds>(took).count()
                                           << " ms");
    CHECK(took < VirtioBlk::kResetLimit + std::chrono::seconds(1));
    CHECK(m(dev.metrics().stuck_resets) == 1);
    CHECK(events.size() == 0);
    CHECK_FALSE(dev.needs_reset());  // the reset itself completed: status reads 0

    MockDriver fresh(mem, GuestAddress(kAreaPerQueue), kAreaPerQueue, 64);
    auto refused = dev.activate(ActivateContext{mem, dev.device_features(), {fresh.config()}, irq, events});
    REQUIRE_FALSE(refused.has_value());
    CHECK(refused.error().what().find("still have requests in host I/O") != std::string::npos);
    CHECK(events.size() == 0);

    // The store answers at last: the parked ring drains, and activation works again.
    fuse.release(0x5a);
    Result<void> again = fail("not tried");
    for (int i = 0; i < 250 && !again; ++i) {
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
        again = dev.activate(ActivateContext{mem, dev.device_features(), {fresh.config()}, irq, events});
    }
    REQUIRE_MESSAGE(again.has_value(), again.error().what());
    CHECK(events.size() == 2);
    // The late completion was dropped: no used element, no status byte in the old ring...
    CHECK(old.used_idx() == 0);
    CHECK(mem.read_obj<uint8_t>(st).value() == 0xee);
    // ...but the read itself did write its data into the guest RAM it was given: the danger
    // virtio_blk.hpp documents, and why activation waited for it.
    std::vector<uint8_t> late(4096);
    REQUIRE(mem.read(data, late).has_value());
    CHECK(late == std::vector<uint8_t>(4096, 0x5a));

    // The new activation reads through the answering store.
    auto h2 = header(blk::kTypeIn, 8);
    uint16_t head = fresh.add_chain({std::span<const uint8_t>(h2)}, {4096, 1});
    fresh.kick();
    dev.queue_notify(0);
    std::optional<std::pair<uint16_t, uint32_t>> u;
    for (int i = 0; i < 200 && !(u = fresh.next_used()); ++i) events.dispatch(50);
    REQUIRE(u.has_value());
    CHECK(u->first == head);
    CHECK(u->second == 4097);
    auto back = fresh.read_writable(head);
    CHECK(back.back() == blk::kStatusOk);
    back.pop_back();
    CHECK(back == std::vector<uint8_t>(4096, 0x5a));
}

// Rate limiting (devices/rate_limiter.hpp) on the real clock: the counts are exact (one timer
// wake-up per held request), the durations only lower bounds the limiter guarantees.
namespace {
BucketParams limit(uint64_t size, uint64_t refill_ms) { return BucketParams{size, 0, refill_ms}; }
// Runs the rig's loop until `n` chains came back on queue q (or ~10 s); returns them.
std::vector<std::pair<uint16_t, uint32_t>> drain_used(Rig& rig, uint16_t q, size_t n, int* rounds = nullptr) {
    std::vector<std::pair<uint16_t, uint32_t>> got;
    for (int i = 0; i < 200 && got.size() < n; ++i) {
        while (auto u = rig.drivers[q]->next_used()) got.push_back(*u);
        if (got.size() < n) {
            rig.events.dispatch(50);
            if (rounds) ++*rounds;
        }
    }
    return got;
}
}  // namespace

TEST_CASE("VirtioBlk: with dirty tracking a read marks its buffers when it completes, not only when submitted" *
          doctest::skip(!HungFuseFile::available())) {
    HungFuseFile fuse(1 << 20);  // declared first: outlives the device
    REQUIRE(fuse.ok());
    GuestMemory mem = make_memory(1);
    for (const auto& r : mem.regions()) r.dirty().enable(true);
    REQUIRE(mem.dirty_tracking());
    FakeRegistry events;
    CountingInterrupt irq;
    VirtioBlkOptions o;
    o.path = fuse.path();
    auto created = VirtioBlk::create(o);
    REQUIRE(created.has_value());
    VirtioBlk& dev = **created;
    MockDriver drv(mem, GuestAddress(0), kAreaPerQueue, 64);
    REQUIRE(dev.activate(ActivateContext{mem, dev.device_features(), {drv.config()}, irq, events}).has_value());

    // An 8 KiB read into two whole pages; the header and status byte live elsewhere.
    GuestAddress hdr = drv.alloc(16), area = drv.alloc(3 * 4096), st = drv.alloc(1);
    const GuestAddress data((area.raw + 4095) & ~uint64_t{4095});
    REQUIRE(mem.write(hdr, header(blk::kTypeIn, 0)).has_value());
    virtq::Desc chain[3] = {{hdr.raw, 16, virtq::kDescFNext, 1},
                            {data.raw, 8192, virtq::kDescFWrite | virtq::kDescFNext, 2},
                            {st.raw, 1, virtq::kDescFWrite, 0}};
    drv.add_raw_chain(0, chain);
    drv.kick();
    dev.queue_notify(0);
    REQUIRE(fuse.wait_for_reads(1, std::chrono::seconds(5)));

    // A dirty-log round while the read is in the host (a Diff snapshot, a migration pass).
    const DirtyBitmap& bits = mem.regions()[0].dirty();
    const uint64_t first = data.raw >> DirtyBitmap::kPageShift;
    (void)mem.regions()[0].dirty().take();
    CHECK_FALSE(bits.is_dirty(first));

    fuse.release(0x5a);
    std::optional<std::pair<uint16_t, uint32_t>> used;
    for (int i = 0; i < 200 && !used; ++i) {
        events.dispatch(50);
        used = drv.next_used();
    }
    REQUIRE(used.has_value());
    uint8_t status = 0xee;
    REQUIRE(mem.read(st, std::span(&status, 1)).has_value());
    CHECK(status == blk::kStatusOk);
    uint8_t b = 0;
    REQUIRE(mem.read(data + 8191, std::span(&b, 1)).has_value());
    CHECK(b == 0x5a);  // the data did land there after the round
    CHECK(bits.is_dirty(first));
    CHECK(bits.is_dirty(first + 1));
}

TEST_CASE("VirtioBlk rate limit: requests beyond the ops bucket wait, the limiter's timer resumes the queue") {
    Rig rig(1 << 20);
    rig.dev->rate_limiter().update({std::nullopt, limit(1, 30)});  // one request per 30 ms
    std::vector<uint16_t> heads;
    for (uint64_t i = 0; i < 6; ++i)
        heads.push_back(rig.send(0, {header(blk::kTypeOut, i * 8), pattern(4096, static_cast<uint8_t>(i))}, {1},
                                 false));
    auto t0 = std::chrono::steady_clock::now();
    rig.drivers[0]->kick();
    rig.dev->queue_notify(0);
    int rounds = 0;
    auto used = drain_used(rig, 0, 6, &rounds);
    auto took = std::chrono::steady_clock::now() - t0;
    REQUIRE(used.size() == 6);
    for (size_t i = 0; i < 6; ++i) CHECK(used[i].first == heads[i]);  // in order
    for (uint64_t i = 0; i < 6; ++i) CHECK(rig.img.read(i * 4096, 4096) == pattern(4096, static_cast<uint8_t>(i)));
    // The first went at once (a full bucket), each of the other five after its own timer.
    CHECK(rig.dev->rate_limiter().throttled() == 5);
    CHECK(rig.dev->rate_limiter().wakeups() == 5);
    CHECK(took >= std::chrono::milliseconds(150));
    MESSAGE("6 requests at 1 per 30 ms took " << std::chrono::duration_cast<std::chrono::milliseconds>(took).count()
                                              << " ms in " << rounds << " loop rounds");
    CHECK(rounds < 40);  // a loop round waits for an fd: nothing spun
    CHECK(m(rig.dev->metrics().writes) == 6);
}

TEST_CASE("VirtioBlk rate limit: bandwidth counts data bytes; a read larger than the bucket goes when it is full") {
    Rig rig(1 << 20);
    CHECK(rig.status_of(0, {header(blk::kTypeOut, 0), pattern(65536, 9)}, {1}) == blk::kStatusOk);
    rig.dev->rate_limiter().update({limit(16384, 20), std::nullopt});  // 16 KiB per 20 ms
    // A flush carries no data: no bandwidth needed, however empty the bucket.
    uint16_t r1 = rig.send(0, {header(blk::kTypeIn, 0)}, {16384, 1});  // takes the whole bucket
    uint16_t fl = rig.send(0, {header(blk::kTypeFlush, 0)}, {1});
    uint16_t r2 = rig.send(0, {header(blk::kTypeIn, 0)}, {65536, 1});  // 4 buckets: waits for full, then debt
    uint16_t r3 = rig.send(0, {header(blk::kTypeIn, 32)}, {4096, 1});  // waits out the debt
    auto used = drain_used(rig, 0, 4);
    REQUIRE(used.size() == 4);
    // In the order the limiter let them go, but the flush's fsync may complete last.
    std::vector<uint16_t> order;
    for (auto [head, len] : used)
        if (head != fl) order.push_back(head);
    CHECK(order == std::vector<uint16_t>{r1, r2, r3});
    auto back = rig.drivers[0]->read_writable(r2);
    CHECK(back.back() == blk::kStatusOk);
    back.pop_back();
    CHECK(back == pattern(65536, 9));
    // r2 waited for a refill (20 ms), r3 for the 48 KiB debt plus its own 4 KiB (65 ms).
    CHECK(rig.dev->rate_limiter().throttled() == 2);
    CHECK(rig.dev->rate_limiter().wakeups() == 2);
}

TEST_CASE("VirtioBlk rate limit: two queues share the device's limiter") {
    VirtioBlkOptions o;
    o.num_queues = 2;
    Rig rig(1 << 20, o);
    rig.dev->rate_limiter().update({std::nullopt, limit(1, 20)});
    for (uint16_t q = 0; q < 2; ++q)
        for (uint64_t i = 0; i < 3; ++i) rig.send(q, {header(blk::kTypeFlush, 0)}, {1});
    auto a = drain_used(rig, 0, 3);
    auto b = drain_used(rig, 1, 3);
    CHECK(a.size() == 3);
    CHECK(b.size() == 3);
    CHECK(rig.dev->rate_limiter().wakeups() == 5);  // one request per wake-up, whichever queue
    CHECK(m(rig.dev->metrics().flushes) == 6);
}

TEST_CASE("VirtioBlk rate limit: a PATCH while throttled lets the held request go at once") {
    Rig rig(1 << 20);
    rig.dev->rate_limiter().update({std::nullopt, limit(1, 600'000)});  // one request per 10 minutes
    CHECK(rig.status_of(0, {header(blk::kTypeFlush, 0)}, {1}) == blk::kStatusOk);
    uint16_t held = rig.send(0, {header(blk::kTypeFlush, 0)}, {1});
    for (int i = 0; i < 3; ++i) rig.events.dispatch(20);
    CHECK_FALSE(rig.drivers[0]->next_used().has_value());
    CHECK(rig.dev->rate_limiter().blocked());
    rig.dev->rate_limiter().update({std::nullopt, limit(0, 0)});  // from another thread in the VMM
    auto used = drain_used(rig, 0, 1);
    REQUIRE(used.size() == 1);
    CHECK(used[0].first == held);
    CHECK(rig.dev->rate_limiter().wakeups() == 1);
    // And a reset while throttled drops the held request with the queue; the device works after.
    rig.dev->rate_limiter().update({std::nullopt, limit(1, 600'000)});  // a new bucket: full
    rig.send(0, {header(blk::kTypeFlush, 0)}, {1});
    rig.send(0, {header(blk::kTypeFlush, 0)}, {1});
    CHECK(drain_used(rig, 0, 1).size() == 1);
    CHECK(rig.dev->rate_limiter().blocked());
    rig.dev->reset();
    CHECK(rig.events.size() == 0);
}
