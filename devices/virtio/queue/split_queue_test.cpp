#include "devices/virtio/queue/split_queue.hpp"

#include <doctest/doctest.h>

#include "devices/virtio/queue/queue_test_util.hpp"

using namespace kestrel;
using namespace kestrel::test;

namespace {

// Pops everything available, completing each chain with its head as the written length.
int drain(SplitQueue& q, GuestMemory& mem) {
    int n = 0;
    for (;;) {
        auto r = q.pop(mem);
        REQUIRE(r);
        if (!r->has_value()) return n;
        auto& c = std::get<DescriptorChain>(**r);
        REQUIRE(q.add_used(mem, c.head(), c.head()));
        ++n;
    }
}

QueueConfig cfg(uint16_t size, uint64_t desc, uint64_t avail, uint64_t used) {
    return QueueConfig{.size = size, .ready = true, .desc = GuestAddress(desc),
                       .avail = GuestAddress(avail), .used = GuestAddress(used)};
}

}  // namespace

TEST_CASE("split queue: create checks size, alignment and ring placement") {
    GuestMemory mem = make_test_memory();
    const uint64_t f = kAllRingFeatures;
    CHECK(SplitQueue::create(mem, cfg(256, 0x1000, 0x2000, 0x3000), 256, f));
    CHECK(SplitQueue::create(mem, cfg(1, 0x1000, 0x2000, 0x3000), 256, f));
    CHECK_FALSE(SplitQueue::create(mem, cfg(0, 0x1000, 0x2000, 0x3000), 256, f));
    CHECK_FALSE(SplitQueue::create(mem, cfg(3, 0x1000, 0x2000, 0x3000), 256, f));
    CHECK_FALSE(SplitQueue::create(mem, cfg(512, 0x1000, 0x2000, 0x3000), 256, f));
    CHECK_FALSE(SplitQueue::create(mem, cfg(65535, 0x1000, 0x2000, 0x3000), 65535, f));
    auto not_ready = cfg(256, 0x1000, 0x2000, 0x3000);
    not_ready.ready = false;
    CHECK_FALSE(SplitQueue::create(mem, not_ready, 256, f));

    // Alignment: desc 16, avail 2, used 4 (virtio 1.2 §2.7).
    CHECK(SplitQueue::create(mem, cfg(8, 0x1010, 0x2002, 0x3004), 256, f));
    CHECK_FALSE(SplitQueue::create(mem, cfg(8, 0x1008, 0x2000, 0x3000), 256, f));
    CHECK_FALSE(SplitQueue::create(mem, cfg(8, 0x1000, 0x2001, 0x3000), 256, f));
    CHECK_FALSE(SplitQueue::create(mem, cfg(8, 0x1000, 0x2000, 0x3002), 256, f));

    // Full ring sizes must be in RAM: desc 16*size, avail 6+2*size, used 6+8*size.
    CHECK(SplitQueue::create(mem, cfg(16, kRamLowEnd - 256, 0x2000, 0x3000), 256, f));
    CHECK_FALSE(SplitQueue::create(mem, cfg(16, kRamLowEnd - 240, 0x2000, 0x3000), 256, f));
    CHECK_FALSE(SplitQueue::create(mem, cfg(16, kRamLowEnd, 0x2000, 0x3000), 256, f));
    CHECK_FALSE(SplitQueue::create(mem, cfg(16, 0x1000, kRamHighEnd - 4, 0x3000), 256, f));
    CHECK_FALSE(SplitQueue::create(mem, cfg(16, 0x1000, 0x2000, ~uint64_t{0} - 3), 256, f));
    // used ring of 16: 4 + 128 bytes fit without EVENT_IDX, avail_event needs 2 more.
    const uint64_t used_tight = kRamHighEnd - 132;
    CHECK(SplitQueue::create(mem, cfg(16, 0x1000, 0x2000, used_tight), 256, virtq::kFeatureVersion1));
    CHECK_FALSE(SplitQueue::create(mem, cfg(16, 0x1000, 0x2000, used_tight), 256, f));
    // Same for the avail ring's used_event (4 + 32 bytes, +2).
    const uint64_t avail_tight = kRamHighEnd - 36;
    CHECK(SplitQueue::create(mem, cfg(16, 0x1000, avail_tight, 0x3000), 256, virtq::kFeatureVersion1));
    CHECK_FALSE(SplitQueue::create(mem, cfg(16, 0x1000, avail_tight, 0x3000), 256, f));
}

TEST_CASE("split queue: pop / add_used bookkeeping and in_flight") {
    GuestMemory mem = make_test_memory();
    MockDriver drv(mem, GuestAddress(kQueueArea), kQueueAreaSize, 4);
    auto q = SplitQueue::create(mem, drv.config(), 256, kAllRingFeatures);
    REQUIRE(q);
    CHECK_FALSE(q->pop(mem)->has_value());
    uint16_t a = drv.add_chain({}, {4});
    uint16_t b = drv.add_chain({}, {8});
    CHECK_FALSE(q->pop(mem)->has_value());  // not kicked yet
    drv.kick();
    auto ca = std::get<DescriptorChain>(**q->pop(mem));
    auto cb = std::get<DescriptorChain>(**q->pop(mem));
    CHECK(ca.head() == a);
    CHECK(cb.head() == b);
    CHECK(q->in_flight() == 2);
    CHECK_FALSE(q->pop(mem)->has_value());
    // Completing out of order is fine.
    REQUIRE(q->add_used(mem, b, 8));
    CHECK(q->in_flight() == 1);
    REQUIRE(q->add_used(mem, a, 3));
    CHECK(q->in_flight() == 0);
    CHECK(drv.used_idx() == 2);
    CHECK(drv.next_used() == std::pair<uint16_t, uint32_t>{b, 8});
    CHECK(drv.next_used() == std::pair<uint16_t, uint32_t>{a, 3});
    CHECK_FALSE(drv.next_used());
    CHECK_FALSE(q->add_used(mem, 4, 0));  // head out of range: a device bug, refused
    CHECK_FALSE(q->add_used(mem, a, 0));  // nothing in flight any more: refused
    CHECK(drv.used_idx() == 2);
}

TEST_CASE("split queue: broken available ring is an error for the whole queue") {
    GuestMemory mem = make_test_memory();
    MockDriver drv(mem, GuestAddress(kQueueArea), kQueueAreaSize, 8);
    auto q = SplitQueue::create(mem, drv.config(), 256, kAllRingFeatures);
    REQUIRE(q);
    SUBCASE("avail idx exactly size ahead is fine") {
        for (int i = 0; i < 8; ++i) drv.add_chain({}, {1});
        drv.kick();
        CHECK(drain(*q, mem) == 8);
    }
    SUBCASE("avail idx jumps more than size ahead") {
        drv.set_avail_idx(9);
        auto r = q->pop(mem);
        CHECK_FALSE(r);
        CHECK(r.error().what().find("ahead") != std::string::npos);
        CHECK(q->in_flight() == 0);
    }
    SUBCASE("avail idx moves backwards (looks like a huge jump)") {
        drv.add_chain({}, {1});
        drv.kick();
        CHECK(drain(*q, mem) == 1);
        drv.set_avail_idx(0);
        CHECK_FALSE(q->pop(mem));
    }
    SUBCASE("head index >= queue size") {
        drv.push_avail(8);
        drv.kick();
        auto r = q->pop(mem);
        CHECK_FALSE(r);
        CHECK(r.error().what().find("head 8") != std::string::npos);
    }
}

TEST_CASE("split queue: free-running indices wrap at 65535") {
    GuestMemory mem = make_test_memory();
    MockDriver drv(mem, GuestAddress(kQueueArea), kQueueAreaSize, 4);
    auto q = SplitQueue::create(mem, drv.config(), 256, kAllRingFeatures);
    REQUIRE(q);
    uint32_t completed = 0;
    for (uint32_t round = 0; round < 70000 / 3; ++round) {
        uint16_t h[3];
        for (auto& x : h) x = drv.add_chain({}, {1});
        drv.kick();
        REQUIRE(drain(*q, mem) == 3);
        for (uint16_t x : h) {
            auto u = drv.next_used();
            REQUIRE(u);
            CHECK(u->first == x);
            ++completed;
        }
    }
    CHECK(completed == 69999);
    CHECK(q->next_avail() == static_cast<uint16_t>(69999));
    CHECK(q->next_used() == static_cast<uint16_t>(69999));
    CHECK(drv.used_idx() == static_cast<uint16_t>(69999));
    CHECK(q->in_flight() == 0);
}

TEST_CASE("split queue: vring_need_event arithmetic (§2.7.7), including wrap-around") {
    using virtq::need_event;
    // event inside [old, new)
    CHECK(need_event(5, 6, 5));
    CHECK(need_event(5, 10, 3));
    CHECK_FALSE(need_event(10, 10, 3));  // idx reached event but entry `event` not yet written
    CHECK_FALSE(need_event(2, 10, 3));   // event before old: already signalled
    CHECK_FALSE(need_event(5, 5, 5));    // nothing new
    // wrap-around at 65535
    CHECK(need_event(65535, 0, 65534));
    CHECK(need_event(65535, 2, 65530));
    CHECK(need_event(0, 1, 65535));
    CHECK_FALSE(need_event(1, 1, 65535));
    CHECK_FALSE(need_event(65529, 2, 65530));
}

TEST_CASE("split queue: EVENT_IDX used-buffer notification suppression") {
    GuestMemory mem = make_test_memory();
    MockDriver drv(mem, GuestAddress(kQueueArea), kQueueAreaSize, 8);
    auto q = SplitQueue::create(mem, drv.config(), 256, kAllRingFeatures);
    REQUIRE(q);
    auto complete = [&](int n) {
        for (int i = 0; i < n; ++i) drv.add_chain({}, {1});
        drv.kick();
        REQUIRE(drain(*q, mem) == n);
        while (drv.next_used()) {}
    };

    complete(1);                       // used idx 1
    CHECK(*q->should_notify(mem));     // first check always notifies
    drv.set_used_event(3);             // wants a notification once entry 3 is used (idx 4)
    complete(2);                       // idx 3
    CHECK_FALSE(*q->should_notify(mem));
    complete(1);                       // idx 4: entry 3 written
    CHECK(*q->should_notify(mem));
    complete(1);                       // idx 5: event 3 already passed
    CHECK_FALSE(*q->should_notify(mem));
    CHECK_FALSE(*q->should_notify(mem));  // no progress, no notification
    drv.set_used_event(5);
    complete(3);                       // idx 8 passes 5
    CHECK(*q->should_notify(mem));
    // NO_INTERRUPT is ignored with EVENT_IDX (§2.7.7.2).
    drv.set_no_interrupt(true);
    drv.set_used_event(8);
    complete(1);
    CHECK(*q->should_notify(mem));
}

TEST_CASE("split queue: EVENT_IDX suppression across the 16-bit wrap (restored state)") {
    GuestMemory mem = make_test_memory();
    MockDriver drv(mem, GuestAddress(kQueueArea), kQueueAreaSize, 8);
    auto q0 = SplitQueue::create(mem, drv.config(), 256, kAllRingFeatures);
    REQUIRE(q0);
    SplitQueueState st = q0->state();
    st.next_avail = st.next_used = st.signalled_used = 65534;
    st.signalled_used_valid = true;
    auto q = SplitQueue::restore(mem, st);
    REQUIRE(q);
    drv.set_avail_idx(65534);
    // Make the mock agree on where the used ring is by reading from 65534 on.
    REQUIRE(mem.write_obj(drv.used_ring() + virtq::kUsedIdxOffset, uint16_t{65534}));
    while (drv.next_used()) {}
    drv.set_used_event(65535);
    for (int i = 0; i < 2; ++i) drv.add_chain({}, {1});
    drv.kick();
    REQUIRE(q->pop(mem));
    REQUIRE(q->add_used(mem, 0, 0));  // idx 65535: entry 65534 used
    CHECK_FALSE(*q->should_notify(mem));
    REQUIRE(q->pop(mem));
    REQUIRE(q->add_used(mem, 1, 0));  // idx 0: entry 65535 used
    CHECK(drv.used_idx() == 0);
    CHECK(*q->should_notify(mem));
}

TEST_CASE("split queue: without EVENT_IDX, NO_INTERRUPT decides") {
    GuestMemory mem = make_test_memory();
    MockDriver drv(mem, GuestAddress(kQueueArea), kQueueAreaSize, 8);
    auto q = SplitQueue::create(mem, drv.config(), 256, virtq::kFeatureVersion1);
    REQUIRE(q);
    drv.add_chain({}, {1});
    drv.kick();
    REQUIRE(drain(*q, mem) == 1);
    CHECK(*q->should_notify(mem));
    drv.set_no_interrupt(true);
    CHECK_FALSE(*q->should_notify(mem));
    drv.set_no_interrupt(false);
    CHECK(*q->should_notify(mem));
    // And avail_event is never written without EVENT_IDX.
    CHECK(drv.avail_event() == 0);
}

TEST_CASE("split queue: avail_event tracks the device so the driver stays quiet while busy") {
    GuestMemory mem = make_test_memory();
    MockDriver drv(mem, GuestAddress(kQueueArea), kQueueAreaSize, 8);
    auto q = SplitQueue::create(mem, drv.config(), 256, kAllRingFeatures);
    REQUIRE(q);
    for (int i = 0; i < 3; ++i) drv.add_chain({}, {1});
    drv.kick();
    REQUIRE(q->pop(mem)->has_value());
    // Busy (two entries still pending): avail_event not moved, so a driver adding entry 3
    // sees event 0 outside [3, 4) and does not notify.
    CHECK(drv.avail_event() == 0);
    CHECK_FALSE(virtq::need_event(drv.avail_event(), 4, 3));
    REQUIRE(q->pop(mem)->has_value());
    REQUIRE(q->pop(mem)->has_value());
    CHECK_FALSE(q->pop(mem)->has_value());
    // Idle: asks to be notified when the driver adds entry 3.
    CHECK(drv.avail_event() == 3);
    CHECK(virtq::need_event(drv.avail_event(), 4, 3));
}

TEST_CASE("split queue: state() / restore() round trip") {
    GuestMemory mem = make_test_memory();
    MockDriver drv(mem, GuestAddress(kQueueArea), kQueueAreaSize, 8);
    auto q = SplitQueue::create(mem, drv.config(), 256, kAllRingFeatures);
    REQUIRE(q);
    for (int i = 0; i < 3; ++i) drv.add_chain({}, {1});
    drv.kick();
    auto c0 = std::get<DescriptorChain>(**q->pop(mem));
    auto c1 = std::get<DescriptorChain>(**q->pop(mem));
    REQUIRE(q->add_used(mem, c0.head(), 1));
    CHECK(*q->should_notify(mem));

    SplitQueueState st = q->state();
    CHECK(st.size == 8);
    CHECK(st.desc == drv.desc_table().raw);
    CHECK(st.avail == drv.avail_ring().raw);
    CHECK(st.used == drv.used_ring().raw);
    CHECK(st.next_avail == 2);
    CHECK(st.next_used == 1);
    CHECK(st.signalled_used == 1);
    CHECK(st.signalled_used_valid);
    CHECK(st.event_idx);
    CHECK(st.indirect);

    auto r = SplitQueue::restore(mem, st);
    REQUIRE(r);
    SplitQueueState st2 = r->state();
    CHECK(st == st2);
    CHECK(r->in_flight() == 1);
    // The restored queue carries on where the old one stopped.
    auto c2 = std::get<DescriptorChain>(**r->pop(mem));
    CHECK(c2.head() != c0.head());
    CHECK(c2.head() != c1.head());
    REQUIRE(r->add_used(mem, c1.head(), 1));
    REQUIRE(r->add_used(mem, c2.head(), 1));
    CHECK(drv.used_idx() == 3);

    SUBCASE("restore re-validates") {
        SplitQueueState bad = st;
        bad.size = 6;
        CHECK_FALSE(SplitQueue::restore(mem, bad));
        bad = st;
        bad.used = kRamHighEnd - 8;
        CHECK_FALSE(SplitQueue::restore(mem, bad));
        bad = st;
        bad.desc += 8;
        CHECK_FALSE(SplitQueue::restore(mem, bad));
        bad = st;
        bad.next_avail = 100;  // 99 in flight on a queue of 8
        CHECK_FALSE(SplitQueue::restore(mem, bad));
    }
}

TEST_CASE("split queue: a saved position hands back unstarted chains and a new queue continues from it") {
    GuestMemory mem = make_test_memory();
    MockDriver drv(mem, GuestAddress(kQueueArea), kQueueAreaSize, 8);
    auto q = SplitQueue::create(mem, drv.config(), 256, kAllRingFeatures);
    REQUIRE(q);
    for (int i = 0; i < 3; ++i) drv.add_chain({}, {4});
    drv.kick();
    CHECK(drain(*q, mem) == 3);
    const uint16_t a = drv.add_chain({}, {4});
    const uint16_t b = drv.add_chain({}, {4});
    CHECK(b != a);
    drv.kick();
    auto ca = std::get<DescriptorChain>(**q->pop(mem));
    auto cb = std::get<DescriptorChain>(**q->pop(mem));
    CHECK(ca.head() == a);
    // a is in flight, b was popped but not started: no position while a is in flight.
    CHECK_FALSE(q->position(1));
    REQUIRE(q->add_used(mem, a, 4));
    auto pos = q->position(1);  // b handed back
    REQUIRE(pos);
    CHECK(pos->next_avail == 4);
    CHECK_FALSE(q->position(2));  // more handed back than are in flight
    // The queue itself is unchanged: it still holds b.
    CHECK(q->in_flight() == 1);

    // A new device continues from the position: b is popped again, the used ring goes on.
    QueueConfig c = drv.config();
    c.position = *pos;
    auto q2 = SplitQueue::create(mem, c, 256, kAllRingFeatures);
    REQUIRE(q2);
    CHECK(q2->next_avail() == 4);
    CHECK(q2->next_used() == 4);
    auto again = std::get<DescriptorChain>(**q2->pop(mem));
    CHECK(again.head() == cb.head());
    REQUIRE(q2->add_used(mem, again.head(), 4));
    CHECK(drv.used_idx() == 5);
    CHECK_FALSE(q2->pop(mem)->has_value());
}
