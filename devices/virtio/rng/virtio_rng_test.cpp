#include "devices/virtio/rng/virtio_rng.hpp"

#include <doctest/doctest.h>
#include <poll.h>
#include <sys/epoll.h>

#include <algorithm>

#include "devices/event_registry.hpp"
#include "devices/virtio/queue/queue_test_util.hpp"

using namespace kestrel;
using namespace kestrel::test;

namespace {

// Deterministic entropy: a running counter, so tests can check exactly what landed where.
struct CounterSource {
    uint8_t next = 1;
    bool broken = false;
    Result<void> operator()(std::span<uint8_t> out) {
        if (broken) return fail("no entropy today");
        for (auto& b : out) b = next++;
        return {};
    }
};

struct Rig {
    GuestMemory mem = make_test_memory();
    MockDriver drv{mem, GuestAddress(kQueueArea), kQueueAreaSize, 16};
    CountingInterrupt irq;
    NullEvents events;
    CounterSource counter;
    VirtioRng rng;

    explicit Rig(bool deterministic = true, uint64_t features = kAllRingFeatures)
        : rng(deterministic ? VirtioRng::EntropySource(std::ref(counter))
                            : VirtioRng::EntropySource(VirtioRng::getrandom_fill)) {
        REQUIRE(rng.activate(ActivateContext{mem, features, {drv.config()}, irq, events}));
    }
};

}  // namespace

TEST_CASE("virtio-rng: identity and empty config space (§5.4)") {
    VirtioRng rng;
    CHECK(rng.device_type() == 4);
    CHECK(rng.num_queues() == 1);
    CHECK(rng.max_queue_size() == VirtioRng::kQueueSize);
    CHECK(rng.device_features() ==
          (virtq::kFeatureVersion1 | virtq::kFeatureEventIdx | virtq::kFeatureIndirectDesc));
    uint8_t cfg[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    rng.read_config(0, cfg);
    CHECK(std::all_of(std::begin(cfg), std::end(cfg), [](uint8_t b) { return b == 0; }));
    rng.write_config(0, cfg);
    CHECK_FALSE(rng.needs_reset());
}

TEST_CASE("virtio-rng: activation refuses bad queue set-ups") {
    GuestMemory mem = make_test_memory();
    MockDriver drv(mem, GuestAddress(kQueueArea), kQueueAreaSize, 16);
    CountingInterrupt irq;
    NullEvents events;
    VirtioRng rng;
    CHECK_FALSE(rng.activate(ActivateContext{mem, kAllRingFeatures, {}, irq, events}));
    CHECK_FALSE(rng.activate(
        ActivateContext{mem, kAllRingFeatures, {drv.config(), drv.config()}, irq, events}));
    QueueConfig off = drv.config();
    off.ready = false;
    CHECK_FALSE(rng.activate(ActivateContext{mem, kAllRingFeatures, {off}, irq, events}));
    QueueConfig big = drv.config();
    big.size = 512;
    CHECK_FALSE(rng.activate(ActivateContext{mem, kAllRingFeatures, {big}, irq, events}));
    CHECK(rng.activate(ActivateContext{mem, kAllRingFeatures, {drv.config()}, irq, events}));
}

TEST_CASE("virtio-rng: fills the writable buffer with host entropy") {
    Rig rig(false);
    uint16_t head = rig.drv.add_chain({}, {64});
    rig.drv.kick();
    rig.rng.queue_notify(0);
    auto used = rig.drv.next_used();
    REQUIRE(used);
    CHECK(used->first == head);
    CHECK(used->second == 64);
    auto bytes_back = rig.drv.read_writable(head);
    // 64 zero bytes from getrandom has probability 2^-512.
    CHECK(std::any_of(bytes_back.begin(), bytes_back.end(), [](uint8_t b) { return b != 0; }));
    CHECK(rig.irq.queue_signals == std::vector<uint16_t>{0});
    CHECK(rig.rng.metrics().requests == 1);
    CHECK(rig.rng.metrics().bytes == 64);
    CHECK(rig.rng.metrics().interrupts == 1);
}

TEST_CASE("virtio-rng: exact bytes across descriptors, indirect tables, readable parts") {
    Rig rig;
    std::vector<uint8_t> junk(10, 0xaa);
    uint16_t a = rig.drv.add_chain({bytes(junk)}, {3, 5});   // readable part is ignored
    uint16_t b = rig.drv.add_indirect_chain({}, {4});
    rig.drv.kick();
    rig.rng.queue_notify(0);
    CHECK(rig.drv.next_used() == std::pair<uint16_t, uint32_t>{a, 8});
    CHECK(rig.drv.next_used() == std::pair<uint16_t, uint32_t>{b, 4});
    CHECK_FALSE(rig.drv.next_used());
    CHECK(rig.drv.read_writable(a) == std::vector<uint8_t>{1, 2, 3, 4, 5, 6, 7, 8});
    CHECK(rig.drv.read_writable(b) == std::vector<uint8_t>{9, 10, 11, 12});
    // One batch, one interrupt.
    CHECK(rig.irq.queue_signals.size() == 1);
    CHECK(rig.rng.metrics().bytes == 12);
}

TEST_CASE("virtio-rng: a request larger than the cap gets exactly the cap") {
    Rig rig;
    uint16_t head = rig.drv.add_chain({}, {VirtioRng::kMaxBytesPerRequest - 16, 4096});
    rig.drv.kick();
    rig.rng.queue_notify(0);
    auto used = rig.drv.next_used();
    REQUIRE(used);
    CHECK(used->first == head);
    CHECK(used->second == VirtioRng::kMaxBytesPerRequest);
    auto back = rig.drv.read_writable(head);
    REQUIRE(back.size() == VirtioRng::kMaxBytesPerRequest - 16 + 4096);
    // The counter source puts (i + 1) mod 256 at byte i.
    CHECK(back[VirtioRng::kMaxBytesPerRequest - 2] == 255);
    CHECK(back[VirtioRng::kMaxBytesPerRequest - 16] == 241);  // first byte of buffer 2
    CHECK(std::all_of(back.begin() + VirtioRng::kMaxBytesPerRequest, back.end(),
                      [](uint8_t x) { return x == 0; }));
}

TEST_CASE("virtio-rng: a chain with no writable part completes with 0 bytes") {
    Rig rig;
    std::vector<uint8_t> junk(4, 1);
    uint16_t head = rig.drv.add_chain({bytes(junk)}, {});
    rig.drv.kick();
    rig.rng.queue_notify(0);
    CHECK(rig.drv.next_used() == std::pair<uint16_t, uint32_t>{head, 0});
    CHECK(rig.rng.metrics().requests == 1);
}

TEST_CASE("virtio-rng: malformed chains are completed with 0, counted, and skipped") {
    Rig rig;
    GuestAddress buf = rig.drv.alloc(16);
    rig.drv.add_raw_chain(0, std::array{virtq::Desc{buf.raw, 8, virtq::kDescFNext, 0}});  // loop
    rig.drv.add_raw_chain(1, std::array{virtq::Desc{kRamHighEnd, 8, virtq::kDescFWrite, 0}});
    rig.drv.add_raw_chain(2, std::array{virtq::Desc{buf.raw, 8, virtq::kDescFWrite, 0}});  // good
    rig.drv.kick();
    rig.rng.queue_notify(0);
    CHECK(rig.drv.next_used() == std::pair<uint16_t, uint32_t>{0, 0});
    CHECK(rig.drv.next_used() == std::pair<uint16_t, uint32_t>{1, 0});
    CHECK(rig.drv.next_used() == std::pair<uint16_t, uint32_t>{2, 8});
    CHECK(rig.rng.metrics().malformed_chains == 2);
    CHECK(rig.rng.metrics().requests == 1);
    CHECK_FALSE(rig.rng.needs_reset());
    CHECK(rig.irq.queue_signals.size() == 1);
}

TEST_CASE("virtio-rng: a broken available ring sets needs_reset; reset and re-activate") {
    Rig rig;
    rig.drv.add_chain({}, {8});
    rig.drv.kick();
    rig.rng.queue_notify(0);
    CHECK(rig.irq.queue_signals.size() == 1);
    rig.drv.set_avail_idx(1 + 17);  // 17 ahead on a queue of 16
    rig.rng.queue_notify(0);
    CHECK(rig.rng.needs_reset());
    CHECK(rig.rng.metrics().queue_errors == 1);
    CHECK(rig.irq.queue_signals.size() == 1);  // nothing new completed
    rig.rng.queue_notify(0);                    // ignored while broken
    CHECK(rig.rng.metrics().queue_errors == 1);

    rig.rng.reset();
    CHECK_FALSE(rig.rng.needs_reset());
    // After reset the device forgot the queue: notifications do nothing.
    rig.rng.queue_notify(0);
    CHECK(rig.drv.used_idx() == 1);

    // A fresh driver set-up works again.
    MockDriver drv2(rig.mem, GuestAddress(kQueueArea), kQueueAreaSize, 16);
    REQUIRE(rig.rng.activate(
        ActivateContext{rig.mem, kAllRingFeatures, {drv2.config()}, rig.irq, rig.events}));
    uint16_t head = drv2.add_chain({}, {2});
    drv2.kick();
    rig.rng.queue_notify(0);
    CHECK(drv2.next_used() == std::pair<uint16_t, uint32_t>{head, 2});
}

TEST_CASE("virtio-rng: EVENT_IDX suppresses interrupts until used_event is passed") {
    Rig rig;
    rig.drv.add_chain({}, {1});
    rig.drv.kick();
    rig.rng.queue_notify(0);  // first completion always signals
    CHECK(rig.irq.queue_signals.size() == 1);
    rig.drv.set_used_event(3);  // driver: wake me once entry 3 is used
    rig.drv.add_chain({}, {1});
    rig.drv.kick();
    rig.rng.queue_notify(0);  // entry 1
    rig.drv.add_chain({}, {1});
    rig.drv.kick();
    rig.rng.queue_notify(0);  // entry 2
    CHECK(rig.irq.queue_signals.size() == 1);
    CHECK(rig.rng.metrics().interrupts == 1);
    rig.drv.add_chain({}, {1});
    rig.drv.kick();
    rig.rng.queue_notify(0);  // entry 3
    CHECK(rig.irq.queue_signals.size() == 2);
    // And the device asks the driver for the next notification at avail idx 4.
    CHECK(rig.drv.avail_event() == 4);
}

TEST_CASE("virtio-rng: without EVENT_IDX, NO_INTERRUPT suppresses interrupts") {
    Rig rig(true, virtq::kFeatureVersion1);
    rig.drv.set_no_interrupt(true);
    uint16_t head = rig.drv.add_chain({}, {4});
    rig.drv.kick();
    rig.rng.queue_notify(0);
    CHECK(rig.drv.next_used() == std::pair<uint16_t, uint32_t>{head, 4});
    CHECK(rig.irq.queue_signals.empty());
    rig.drv.set_no_interrupt(false);
    rig.drv.add_chain({}, {4});
    rig.drv.kick();
    rig.rng.queue_notify(0);
    CHECK(rig.irq.queue_signals.size() == 1);
}

TEST_CASE("virtio-rng: entropy failure completes the request with 0 bytes") {
    Rig rig;
    rig.counter.broken = true;
    uint16_t head = rig.drv.add_chain({}, {16});
    rig.drv.kick();
    rig.rng.queue_notify(0);
    CHECK(rig.drv.next_used() == std::pair<uint16_t, uint32_t>{head, 0});
    CHECK(rig.rng.metrics().entropy_errors == 1);
    CHECK_FALSE(rig.rng.needs_reset());
}

TEST_CASE("virtio-rng: notifications for other queues and before activation are ignored") {
    Rig rig;
    rig.drv.add_chain({}, {4});
    rig.drv.kick();
    rig.rng.queue_notify(1);
    CHECK(rig.drv.used_idx() == 0);
    VirtioRng idle;
    idle.queue_notify(0);  // not activated: must not crash
    CHECK_FALSE(idle.needs_reset());
}

TEST_CASE("virtio-rng: getrandom_fill fills large buffers") {
    std::vector<uint8_t> buf(1 << 20, 0);
    REQUIRE(VirtioRng::getrandom_fill(buf));
    CHECK(std::count(buf.end() - 4096, buf.end(), uint8_t{0}) < 4096);
}

namespace {
// Polls the limiter's timerfd like the event loop would, up to `ms`; runs the device's
// callback through the registry the rig activated with.
struct TimerEvents : EventRegistry {
    int fd = -1;
    Callback cb;
    Result<void> add(int f, uint32_t, Callback c) override {
        fd = f;
        cb = std::move(c);
        return {};
    }
    Result<void> remove(int f) override {
        if (f != fd) return fail("fd {} not registered", f);
        fd = -1;
        return {};
    }
    bool dispatch(int ms) {
        pollfd p{fd, POLLIN, 0};
        if (fd < 0 || ::poll(&p, 1, ms) != 1) return false;
        cb(EPOLLIN);
        return true;
    }
};
}  // namespace

TEST_CASE("virtio-rng rate limit: bytes beyond the bucket wait for the limiter's timer, one wake-up each") {
    GuestMemory mem = make_test_memory();
    MockDriver drv{mem, GuestAddress(kQueueArea), kQueueAreaSize, 16};
    CountingInterrupt irq;
    TimerEvents events;
    CounterSource counter;
    auto lim = RateLimiter::create({BucketParams{64, 0, 20}, std::nullopt});  // 64 bytes per 20 ms
    REQUIRE(lim.has_value());
    VirtioRng rng(std::ref(counter), std::move(*lim));
    REQUIRE(rng.activate(ActivateContext{mem, kAllRingFeatures, {drv.config()}, irq, events}));
    REQUIRE(events.fd >= 0);
    std::vector<uint16_t> heads;
    for (int i = 0; i < 4; ++i) heads.push_back(drv.add_chain({}, {64}));
    drv.kick();
    rng.queue_notify(0);
    CHECK(drv.next_used() == std::pair<uint16_t, uint32_t>{heads[0], 64});
    CHECK_FALSE(drv.next_used());
    rng.queue_notify(0);  // a notify while throttled changes nothing
    CHECK_FALSE(drv.next_used());
    int timer_events = 0;
    std::vector<std::pair<uint16_t, uint32_t>> got;
    for (int i = 0; i < 100 && got.size() < 3; ++i) {
        if (events.dispatch(1000)) ++timer_events;
        while (auto u = drv.next_used()) got.push_back(*u);
    }
    REQUIRE(got.size() == 3);
    for (int i = 0; i < 3; ++i) CHECK(got[static_cast<size_t>(i)] == std::pair<uint16_t, uint32_t>{heads[static_cast<size_t>(i) + 1], 64});
    CHECK(timer_events == 3);
    CHECK(rng.rate_limiter()->wakeups() == 3);
    CHECK(rng.rate_limiter()->throttled() == 3);
    CHECK(rng.metrics().bytes == 256);
    rng.reset();
    CHECK(events.fd == -1);
}
