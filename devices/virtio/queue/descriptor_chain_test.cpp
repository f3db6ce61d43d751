#include "devices/virtio/queue/descriptor_chain.hpp"

#include <doctest/doctest.h>

#include <numeric>

#include "devices/virtio/queue/queue_test_util.hpp"

using namespace kestrel;
using namespace kestrel::test;
using virtq::Desc;

namespace {

struct Fixture {
    GuestMemory mem = make_test_memory();
    MockDriver drv{mem, GuestAddress(kQueueArea), kQueueAreaSize, 16};
    SplitQueue q = *SplitQueue::create(mem, drv.config(), 256, kAllRingFeatures);

    // Pops one entry that must be a well-formed chain.
    DescriptorChain pop_ok() {
        auto r = q.pop(mem);
        REQUIRE(r);
        REQUIRE(r->has_value());
        auto* c = std::get_if<DescriptorChain>(&**r);
        if (!c) FAIL("malformed: " << std::get<MalformedChain>(**r).error.what());
        return std::move(*c);
    }
    // Pops one entry that must be malformed; completes it as a device must, and checks the
    // driver gets the head back with length 0.
    std::string pop_malformed(uint16_t expected_head) {
        auto r = q.pop(mem);
        REQUIRE(r);
        REQUIRE(r->has_value());
        auto* bad = std::get_if<MalformedChain>(&**r);
        REQUIRE(bad != nullptr);
        CHECK(bad->head == expected_head);
        CHECK(q.in_flight() == 1);
        REQUIRE(q.add_used(mem, bad->head, 0));
        auto used = drv.next_used();
        REQUIRE(used);
        CHECK(used->first == expected_head);
        CHECK(used->second == 0);
        CHECK(q.in_flight() == 0);
        return bad->error.what();
    }
};

std::vector<uint8_t> pattern(size_t n, uint8_t seed) {
    std::vector<uint8_t> v(n);
    for (size_t i = 0; i < n; ++i) v[i] = static_cast<uint8_t>(seed + i * 7);
    return v;
}

}  // namespace

TEST_CASE("descriptor chain: single readable descriptor") {
    Fixture f;
    auto data = pattern(100, 1);
    uint16_t head = f.drv.add_chain({bytes(data)}, {});
    f.drv.kick();
    auto c = f.pop_ok();
    CHECK(c.head() == head);
    CHECK(c.descriptors().size() == 1);
    CHECK(c.readable_bytes() == 100);
    CHECK(c.writable_bytes() == 0);
    std::vector<uint8_t> out(200, 0xee);
    auto n = c.read_to(f.mem, out);
    REQUIRE(n);
    CHECK(*n == 100);
    CHECK(std::equal(data.begin(), data.end(), out.begin()));
    CHECK(out[100] == 0xee);
    // Nothing writable: writes are clipped to 0 bytes.
    CHECK(*c.write_from(f.mem, data) == 0);
    CHECK_FALSE(f.q.pop(f.mem)->has_value());
}

TEST_CASE("descriptor chain: multi-descriptor copies and iovecs across boundaries") {
    Fixture f;
    auto r0 = pattern(10, 1), r1 = pattern(30, 50);
    uint16_t head = f.drv.add_chain({bytes(r0), bytes(r1)}, {5, 20});
    f.drv.kick();
    auto c = f.pop_ok();
    CHECK(c.head() == head);
    REQUIRE(c.descriptors().size() == 4);
    CHECK(c.readable().size() == 2);
    CHECK(c.writable().size() == 2);
    CHECK_FALSE(c.readable()[1].device_writable);
    CHECK(c.writable()[0].device_writable);
    CHECK(c.readable_bytes() == 40);
    CHECK(c.writable_bytes() == 25);

    std::vector<uint8_t> all(r0);
    all.insert(all.end(), r1.begin(), r1.end());
    std::vector<uint8_t> out(12);
    CHECK(*c.read_to(f.mem, out, 5) == 12);  // 5 bytes of r0, 7 of r1
    CHECK(std::equal(out.begin(), out.end(), all.begin() + 5));
    CHECK(*c.read_to(f.mem, out, 35) == 5);  // clipped at the end
    CHECK(std::equal(out.begin(), out.begin() + 5, all.begin() + 35));
    CHECK(*c.read_to(f.mem, out, 40) == 0);
    CHECK(*c.read_to(f.mem, out, 1000) == 0);

    auto w = pattern(25, 9);
    CHECK(*c.write_from(f.mem, std::span(w).first(8), 3) == 8);  // 2 in buf 0, 6 in buf 1
    CHECK(*c.write_from(f.mem, w, 24) == 1);                       // clipped: last byte
    auto back = f.drv.read_writable(head);
    REQUIRE(back.size() == 25);
    std::vector<uint8_t> expect(25, 0);
    std::copy(w.begin(), w.begin() + 8, expect.begin() + 3);
    expect[24] = w[0];
    CHECK(back == expect);

    auto riov = c.readable_iovecs(f.mem, 8, 4);
    REQUIRE(riov);
    REQUIRE(riov->size() == 2);
    CHECK((*riov)[0].iov_len == 2);
    CHECK((*riov)[1].iov_len == 2);
    CHECK(static_cast<uint8_t*>((*riov)[0].iov_base)[0] == all[8]);
    CHECK(static_cast<uint8_t*>((*riov)[1].iov_base)[1] == all[11]);
    auto wiov = c.writable_iovecs(f.mem, 0, 25);
    REQUIRE(wiov);
    REQUIRE(wiov->size() == 2);
    CHECK((*wiov)[0].iov_len + (*wiov)[1].iov_len == 25);
    CHECK(c.readable_iovecs(f.mem, 40, 0)->empty());
    CHECK_FALSE(c.readable_iovecs(f.mem, 30, 11));   // past the readable part
    CHECK_FALSE(c.writable_iovecs(f.mem, 26, 0));
    CHECK_FALSE(c.writable_iovecs(f.mem, 1, ~uint64_t{0}));  // overflow-safe

    REQUIRE(f.q.add_used(f.mem, c.head(), 25));
    auto used = f.drv.next_used();
    REQUIRE(used);
    CHECK(used->first == head);
    CHECK(used->second == 25);
}

TEST_CASE("descriptor chain: indirect table") {
    Fixture f;
    auto r0 = pattern(16, 3);
    uint16_t head = f.drv.add_indirect_chain({bytes(r0)}, {8, 8});
    f.drv.kick();
    auto c = f.pop_ok();
    CHECK(c.head() == head);
    CHECK(c.descriptors().size() == 3);
    CHECK(c.readable_bytes() == 16);
    CHECK(c.writable_bytes() == 16);
    auto w = pattern(16, 77);
    CHECK(*c.write_from(f.mem, w) == 16);
    CHECK(f.drv.read_writable(head) == w);
}

TEST_CASE("descriptor chain: direct descriptors followed by an indirect one (§2.7.5.3.2)") {
    Fixture f;
    GuestAddress buf = f.drv.alloc(64);
    GuestAddress table = f.drv.write_indirect_table(std::array{
        Desc{buf.raw + 16, 16, virtq::kDescFNext, 1},
        Desc{buf.raw + 32, 32, virtq::kDescFWrite, 0}});
    // The WRITE flag on the descriptor naming the table must be ignored.
    f.drv.add_raw_chain(0, std::array{Desc{buf.raw, 16, virtq::kDescFNext, 1},
                                      Desc{table.raw, 32, virtq::kDescFIndirect | virtq::kDescFWrite, 0}});
    f.drv.kick();
    auto c = f.pop_ok();
    CHECK(c.descriptors().size() == 3);
    CHECK(c.readable_bytes() == 32);
    CHECK(c.writable_bytes() == 32);
}

TEST_CASE("descriptor chain: largest indirect table (4096 entries) is accepted") {
    Fixture f;
    GuestAddress buf = f.drv.alloc(1);
    std::vector<Desc> table(DescriptorChain::kMaxIndirectDescriptors);
    for (size_t i = 0; i < table.size(); ++i)
        table[i] = Desc{buf.raw, 1, virtq::kDescFNext, static_cast<uint16_t>(i + 1)};
    table.back().flags = 0;
    GuestAddress t = f.drv.write_indirect_table(table);
    f.drv.add_raw_chain(0, std::array{Desc{t.raw, DescriptorChain::kMaxIndirectTableBytes,
                                           virtq::kDescFIndirect, 0}});
    f.drv.kick();
    auto c = f.pop_ok();
    CHECK(c.readable_bytes() == DescriptorChain::kMaxIndirectDescriptors);
    CHECK(c.descriptors().size() <= DescriptorChain::max_descriptors(16));
}

TEST_CASE("descriptor chain: zero-length descriptors are kept but contribute nothing") {
    Fixture f;
    GuestAddress buf = f.drv.alloc(8);
    REQUIRE(f.mem.write_obj(buf, uint64_t{0x0807060504030201}));
    // The zero-length descriptor points into the hole: never touched, so accepted.
    f.drv.add_raw_chain(0, std::array{Desc{0x180000, 0, virtq::kDescFNext, 1},
                                      Desc{buf.raw, 8, virtq::kDescFNext, 2},
                                      Desc{0xdead0000000, 0, virtq::kDescFWrite, 0}});
    f.drv.kick();
    auto c = f.pop_ok();
    CHECK(c.descriptors().size() == 3);
    CHECK(c.readable_bytes() == 8);
    CHECK(c.writable_bytes() == 0);
    uint8_t out[8];
    CHECK(*c.read_to(f.mem, out) == 8);
    CHECK(out[7] == 8);
    auto iov = c.readable_iovecs(f.mem, 0, 8);
    REQUIRE(iov);
    CHECK(iov->size() == 1);
}

TEST_CASE("descriptor chain: hostile chains are refused, their head still returned") {
    Fixture f;
    GuestAddress buf = f.drv.alloc(64);
    GuestAddress good_table = f.drv.write_indirect_table(std::array{Desc{buf.raw, 8, 0, 0}});

    struct Case {
        const char* name;
        std::vector<Desc> descs;  // written at table index 0..
        const char* expect;       // substring of the error
    };
    std::vector<Case> cases = {
        {"next past queue size", {{buf.raw, 8, virtq::kDescFNext, 16}}, "next 16"},
        {"loop 0->1->0", {{buf.raw, 8, virtq::kDescFNext, 1}, {buf.raw, 8, virtq::kDescFNext, 0}},
         "longer than the queue size"},
        {"self loop", {{buf.raw, 8, virtq::kDescFNext, 0}}, "longer than the queue size"},
        {"buffer in the hole", {{kRamLowEnd, 1, 0, 0}}, "outside guest RAM"},
        {"buffer straddles region end", {{kRamLowEnd - 4, 8, 0, 0}}, "outside guest RAM"},
        {"buffer past all memory", {{kRamHighEnd, 16, virtq::kDescFWrite, 0}}, "outside guest RAM"},
        {"huge length", {{buf.raw, 0xffffffff, 0, 0}}, "outside guest RAM"},
        {"address + length overflows", {{~uint64_t{0} - 0xf, 0x20, 0, 0}}, "outside guest RAM"},
        {"readable after writable",
         {{buf.raw, 8, virtq::kDescFWrite | virtq::kDescFNext, 1}, {buf.raw + 8, 8, 0, 0}},
         "readable descriptor after a writable"},
        {"INDIRECT with NEXT",
         {{good_table.raw, 16, virtq::kDescFIndirect | virtq::kDescFNext, 1}, {buf.raw, 8, 0, 0}},
         "INDIRECT together with NEXT"},
        {"indirect len 0", {{good_table.raw, 0, virtq::kDescFIndirect, 0}}, "indirect table length"},
        {"indirect len 17", {{good_table.raw, 17, virtq::kDescFIndirect, 0}}, "indirect table length"},
        {"indirect len over cap",
         {{good_table.raw, DescriptorChain::kMaxIndirectTableBytes + 16, virtq::kDescFIndirect, 0}},
         "indirect table length"},
        {"indirect table in the hole", {{kRamLowEnd, 16, virtq::kDescFIndirect, 0}},
         "indirect table"},
        {"indirect table straddles end", {{kRamHighEnd - 16, 32, virtq::kDescFIndirect, 0}},
         "outside guest RAM"},
    };
    for (auto& c : cases) {
        CAPTURE(c.name);
        f.drv.add_raw_chain(0, c.descs);
        f.drv.kick();
        std::string err = f.pop_malformed(0);
        CHECK_MESSAGE(err.find(c.expect) != std::string::npos, err);
    }

    SUBCASE("indirect inside indirect") {
        GuestAddress inner = f.drv.write_indirect_table(std::array{Desc{buf.raw, 8, 0, 0}});
        GuestAddress outer =
            f.drv.write_indirect_table(std::array{Desc{inner.raw, 16, virtq::kDescFIndirect, 0}});
        f.drv.add_raw_chain(0, std::array{Desc{outer.raw, 16, virtq::kDescFIndirect, 0}});
        f.drv.kick();
        CHECK(f.pop_malformed(0).find("INDIRECT inside an indirect table") != std::string::npos);
    }
    SUBCASE("loop inside an indirect table") {
        GuestAddress t = f.drv.write_indirect_table(std::array{
            Desc{buf.raw, 8, virtq::kDescFNext, 1}, Desc{buf.raw, 8, virtq::kDescFNext, 0}});
        f.drv.add_raw_chain(0, std::array{Desc{t.raw, 32, virtq::kDescFIndirect, 0}});
        f.drv.kick();
        CHECK(f.pop_malformed(0).find("indirect chain longer") != std::string::npos);
    }
    SUBCASE("indirect next past the table") {
        GuestAddress t = f.drv.write_indirect_table(std::array{Desc{buf.raw, 8, virtq::kDescFNext, 1}});
        f.drv.add_raw_chain(0, std::array{Desc{t.raw, 16, virtq::kDescFIndirect, 0}});
        f.drv.kick();
        CHECK(f.pop_malformed(0).find("indirect next 1") != std::string::npos);
    }
    SUBCASE("writable before readable inside an indirect table") {
        GuestAddress t = f.drv.write_indirect_table(std::array{
            Desc{buf.raw, 8, virtq::kDescFWrite | virtq::kDescFNext, 1}, Desc{buf.raw, 8, 0, 0}});
        f.drv.add_raw_chain(0, std::array{Desc{t.raw, 32, virtq::kDescFIndirect, 0}});
        f.drv.kick();
        CHECK(f.pop_malformed(0).find("after a writable") != std::string::npos);
    }
    SUBCASE("buffer outside RAM inside an indirect table") {
        GuestAddress t = f.drv.write_indirect_table(std::array{Desc{kRamHighEnd - 1, 2, 0, 0}});
        f.drv.add_raw_chain(0, std::array{Desc{t.raw, 16, virtq::kDescFIndirect, 0}});
        f.drv.kick();
        CHECK(f.pop_malformed(0).find("outside guest RAM") != std::string::npos);
    }

    // After all that, the queue still works.
    auto data = pattern(4, 4);
    uint16_t head = f.drv.add_chain({bytes(data)}, {4});
    f.drv.kick();
    auto c = f.pop_ok();
    CHECK(c.head() == head);
    CHECK(c.readable_bytes() == 4);
}

TEST_CASE("descriptor chain: INDIRECT without VIRTIO_F_INDIRECT_DESC is refused") {
    GuestMemory mem = make_test_memory();
    MockDriver drv(mem, GuestAddress(kQueueArea), kQueueAreaSize, 8);
    auto q = SplitQueue::create(mem, drv.config(), 256, virtq::kFeatureVersion1);
    REQUIRE(q);
    uint16_t head = drv.add_indirect_chain({}, {8});
    drv.kick();
    auto r = q->pop(mem);
    REQUIRE(r);
    REQUIRE(r->has_value());
    auto* bad = std::get_if<MalformedChain>(&**r);
    REQUIRE(bad);
    CHECK(bad->head == head);
    CHECK(bad->error.what().find("VIRTIO_F_INDIRECT_DESC") != std::string::npos);
}

TEST_CASE("descriptor chain: parse refuses a head >= queue size") {
    GuestMemory mem = make_test_memory();
    CHECK_FALSE(DescriptorChain::parse(mem, GuestAddress(kQueueArea), 8, 8, true));
}
