#include "devices/virtio/balloon/virtio_balloon.hpp"

#include <doctest/doctest.h>

#include <cstring>

#include "devices/event_registry.hpp"
#include "devices/virtio/queue/queue_test_util.hpp"

using namespace kestrel;
using namespace kestrel::test;

namespace {

// Pages the tests give away: [0x90000, 0x100000) of low RAM (the queues live below) and the
// high region.
constexpr uint64_t kFree = 0x90000;

struct Rig {
    GuestMemory mem = make_test_memory();
    MockDriver inflate{mem, GuestAddress(kQueueArea), 0x20000, 16};
    MockDriver deflate{mem, GuestAddress(kQueueArea + 0x20000), 0x20000, 16};
    MockDriver reporting{mem, GuestAddress(kQueueArea + 0x40000), 0x20000, 16};
    CountingInterrupt irq;
    NullEvents events;
    VirtioBalloon dev;

    explicit Rig(BalloonOptions o = {0, false, true}, uint64_t features = kAllRingFeatures | VirtioBalloon::kFeaturePageReporting)
        : dev(o) {
        REQUIRE(mem.fill(GuestAddress(kFree), kRamLowEnd - kFree, 0xab));
        REQUIRE(mem.fill(GuestAddress(kRamHighStart), kRamHighEnd - kRamHighStart, 0xcd));
        std::vector<QueueConfig> qs{inflate.config(), deflate.config()};
        if (o.free_page_reporting) {
            qs.push_back(reporting.config());
            if (!(features & VirtioBalloon::kFeaturePageReporting)) qs.back().ready = false;
        }
        REQUIRE(dev.activate(ActivateContext{mem, features, qs, irq, events}));
    }
    uint8_t at(uint64_t a) { return *mem.read_obj<uint8_t>(GuestAddress(a)); }
};

std::vector<uint8_t> pfn_bytes(std::vector<uint32_t> pfns) {
    std::vector<uint8_t> b(pfns.size() * 4);
    std::memcpy(b.data(), pfns.data(), b.size());
    return b;
}

}  // namespace

TEST_CASE("virtio-balloon: identity, features and config space (§5.5.3, §5.5.4)") {
    VirtioBalloon plain(BalloonOptions{256, false, false});
    CHECK(plain.device_type() == 5);
    CHECK(plain.num_queues() == 2);
    CHECK((plain.device_features() & VirtioBalloon::kFeaturePageReporting) == 0);
    CHECK((plain.device_features() & VirtioBalloon::kFeatureDeflateOnOom) == 0);
    CHECK((plain.device_features() & 1) == 0);  // never MUST_TELL_HOST
    VirtioBalloon rep(BalloonOptions{0, true, true});
    CHECK(rep.num_queues() == 3);
    CHECK((rep.device_features() & VirtioBalloon::kFeaturePageReporting) != 0);
    CHECK((rep.device_features() & VirtioBalloon::kFeatureDeflateOnOom) != 0);

    uint8_t cfg[16];
    std::memset(cfg, 0xff, sizeof cfg);
    plain.read_config(0, cfg);
    uint32_t num_pages, actual;
    std::memcpy(&num_pages, cfg, 4);
    std::memcpy(&actual, cfg + 4, 4);
    CHECK(num_pages == 256);
    CHECK(actual == 0);
    CHECK(cfg[8] == 0);
    CHECK(cfg[15] == 0);
    const uint32_t got = 100;
    plain.write_config(4, std::span(reinterpret_cast<const uint8_t*>(&got), 4));
    CHECK(plain.actual_pages() == 100);
    plain.write_config(0, std::span(reinterpret_cast<const uint8_t*>(&got), 4));  // num_pages is the device's
    plain.read_config(0, std::span(cfg, 4));
    std::memcpy(&num_pages, cfg, 4);
    CHECK(num_pages == 256);
    uint8_t tail[4] = {9, 9, 9, 9};
    plain.read_config(4094, std::span(tail, 2));  // past the layout: zeros
    CHECK(tail[0] == 0);
}

TEST_CASE("virtio-balloon: inflated pages go back to the host; bad PFNs are skipped") {
    Rig rig;
    // 0x95, 0x96 (a run), 0x98; one PFN in the hole and one far beyond RAM.
    auto req = pfn_bytes({0x95, 0x96, 0x98, 0x150, 0xffffffff});
    uint16_t head = rig.inflate.add_chain({bytes(req)}, {});
    rig.inflate.kick();
    rig.dev.queue_notify(0);
    CHECK(rig.inflate.next_used() == std::pair<uint16_t, uint32_t>{head, 0});
    CHECK(rig.at(0x94fff) == 0xab);
    CHECK(rig.at(0x95000) == 0);
    CHECK(rig.at(0x96fff) == 0);
    CHECK(rig.at(0x97000) == 0xab);
    CHECK(rig.at(0x98000) == 0);
    CHECK(rig.at(0x99000) == 0xab);
    CHECK(rig.dev.metrics().inflated_pages == 3);
    CHECK(rig.dev.metrics().bad_ranges == 2);
    CHECK(rig.irq.queue_signals == std::vector<uint16_t>{0});

    auto back = pfn_bytes({0x95});
    uint16_t d = rig.deflate.add_chain({bytes(back)}, {});
    rig.deflate.kick();
    rig.dev.queue_notify(1);
    CHECK(rig.deflate.next_used() == std::pair<uint16_t, uint32_t>{d, 0});
    CHECK(rig.dev.metrics().deflated_pages == 1);
}

TEST_CASE("virtio-balloon: a free page report gives whole ranges back, refuses what is not RAM or not aligned") {
    Rig rig;
    using virtq::Desc;
    const Desc descs[] = {
        {kRamHighStart, 0x8000, virtq::kDescFWrite | virtq::kDescFNext, 1},
        {0xa0000, 0x2000, virtq::kDescFWrite | virtq::kDescFNext, 2},
        {0xb0800, 0x1000, virtq::kDescFWrite, 0},  // not page-aligned: kept
    };
    rig.reporting.add_raw_chain(0, descs);
    rig.reporting.kick();
    rig.dev.queue_notify(2);
    auto used = rig.reporting.next_used();
    REQUIRE(used);
    CHECK(used->first == 0);
    CHECK(used->second == 0);
    CHECK(rig.at(kRamHighStart) == 0);
    CHECK(rig.at(kRamHighStart + 0x7fff) == 0);
    CHECK(rig.at(kRamHighStart + 0x8000) == 0xcd);
    CHECK(rig.at(0xa0000) == 0);
    CHECK(rig.at(0xa1fff) == 0);
    CHECK(rig.at(0xa2000) == 0xab);
    CHECK(rig.at(0xb0800) == 0xab);
    CHECK(rig.dev.metrics().reports == 1);
    CHECK(rig.dev.metrics().reported_bytes == 0xa000);
    CHECK(rig.dev.metrics().bad_ranges == 1);
    CHECK(rig.irq.queue_signals == std::vector<uint16_t>{2});
    auto pos = rig.dev.settle_queues();
    REQUIRE(pos);
    REQUIRE(pos->size() == 3);
    REQUIRE((*pos)[2]);
    CHECK((*pos)[2]->next_avail == 1);
}

TEST_CASE("virtio-balloon: a driver without page reporting leaves the reporting queue off") {
    Rig rig(BalloonOptions{0, false, true}, kAllRingFeatures);
    const virtq::Desc d{kRamHighStart, 0x1000, virtq::kDescFWrite, 0};
    rig.reporting.add_raw_chain(0, std::span(&d, 1));
    rig.reporting.kick();
    rig.dev.queue_notify(2);  // ignored: not in use
    rig.dev.queue_notify(7);  // no such queue
    CHECK_FALSE(rig.reporting.next_used());
    CHECK(rig.at(kRamHighStart) == 0xcd);
    CHECK(rig.dev.metrics().reports == 0);
    CHECK_FALSE(rig.dev.needs_reset());
}

TEST_CASE("virtio-balloon: activation wants every queue the device has") {
    GuestMemory mem = make_test_memory();
    MockDriver a(mem, GuestAddress(kQueueArea), 0x20000, 16);
    CountingInterrupt irq;
    NullEvents events;
    VirtioBalloon dev(BalloonOptions{});
    CHECK_FALSE(dev.activate(ActivateContext{mem, kAllRingFeatures, {a.config()}, irq, events}));
    QueueConfig off = a.config();
    off.ready = false;
    CHECK_FALSE(dev.activate(ActivateContext{mem, kAllRingFeatures, {a.config(), off}, irq, events}));
}
