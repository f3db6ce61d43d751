// VirtioNet against a REAL tap in a private network namespace, driven by the mock driver:
// frames the device writes are read back from an AF_PACKET socket on the tap interface, and
// frames sent on that socket must reach the guest's buffers.
#include "devices/virtio/net/virtio_net.hpp"

#include <doctest/doctest.h>
#include <poll.h>

#include <chrono>
#include <cstring>
#include <map>
#include <memory>
#include <optional>
#include <vector>

#include "devices/virtio/net/net_spec.hpp"
#include "devices/virtio/net/net_test_env.hpp"
#include "devices/virtio/queue/mock_driver.hpp"
#include "devices/virtio/queue/virtq_spec.hpp"

using namespace kestrel;
using kestrel::test::NetnsScope;
using kestrel::test::PacketSocket;
using kestrel::test::test_frame;

namespace {

// Plays the VMM event loop: remembers registrations, polls the fds, runs the callbacks.
class FakeRegistry final : public EventRegistry {
public:
    Result<void> add(int fd, uint32_t, Callback cb) override {
        if (cbs_.count(fd)) return fail("fd {} already registered", fd);
        cbs_[fd] = std::move(cb);
        return {};
    }
    Result<void> remove(int fd) override {
        if (!cbs_.erase(fd)) return fail("fd {} not registered", fd);
        return {};
    }
    size_t size() const { return cbs_.size(); }
    int dispatch(int timeout_ms) {
        std::vector<pollfd> fds;
        for (auto& [fd, cb] : cbs_) fds.push_back(pollfd{fd, POLLIN, 0});
        if (::poll(fds.data(), fds.size(), timeout_ms) <= 0) return 0;
        int ran = 0;
        for (auto& p : fds) {
            auto it = cbs_.find(p.fd);
            if (!(p.revents & POLLIN) || it == cbs_.end()) continue;
            auto cb = it->second;
            cb(static_cast<uint32_t>(p.revents));
            ++ran;
        }
        return ran;
    }

private:
    std::map<int, Callback> cbs_;
};

class CountingInterrupt final : public VirtioInterrupt {
public:
    void signal_queue(uint16_t q) override { queue[q]++; }
    void signal_config() override { config++; }
    std::map<uint16_t, int> queue;
    int config = 0;
};

constexpr uint64_t kArea = 32ull << 20;  // per queue: rings + buffers
constexpr uint16_t kQueueSize = 256;

std::vector<uint8_t> hdr_bytes(const net::NetHdr& h) {
    std::vector<uint8_t> v(sizeof h);
    std::memcpy(v.data(), &h, sizeof h);
    return v;
}

net::NetHdr hdr_of(const std::vector<uint8_t>& buf) {
    net::NetHdr h;
    REQUIRE(buf.size() >= sizeof h);
    std::memcpy(&h, buf.data(), sizeof h);
    return h;
}

uint64_t get(const NetMetrics::Counter& c) { return NetMetrics::get(c); }

// A VirtioNet on tap kt0 (up, in a fresh namespace), activated with mock drivers on both
// queues, and an AF_PACKET socket on kt0.
struct Rig {
    NetnsScope ns;
    GuestMemory mem;
    FakeRegistry events;
    CountingInterrupt irq;
    std::unique_ptr<VirtioNet> dev;
    std::unique_ptr<MockDriver> rx, tx, ctrl;  // ctrl: only for Rig(..., with_ctrl = true)
    std::optional<PacketSocket> pkt;
    uint64_t acked = 0;

    static NetnsScope make_ns() {
        auto ns = NetnsScope::enter();
        if (!ns) FAIL(ns.error().what());  // a missing namespace is a failure, never a skip
        return std::move(*ns);
    }
    static GuestMemory make_mem() {
        GuestRegionSpec spec{GuestAddress(0), 3 * kArea};
        auto m = GuestMemory::create(std::span(&spec, 1));
        REQUIRE(m.has_value());
        return std::move(*m);
    }

    explicit Rig(uint64_t drop_features = 0, const char* mtu = nullptr, bool with_ctrl = false)
        : ns(make_ns()), mem(make_mem()) {
        auto r = NetnsScope::ip("tuntap add kt0 mode tap");
        REQUIRE_MESSAGE(r.has_value(), (r ? "" : r.error().what()));
        if (mtu) REQUIRE(NetnsScope::ip(std::string("link set kt0 mtu ") + mtu).has_value());
        REQUIRE(NetnsScope::ip("link set kt0 up").has_value());
        VirtioNetOptions o;
        o.tap = "kt0";
        o.mac = MacAddress{0x52, 0x54, 0x00, 0x12, 0x34, 0x56};
        auto d = VirtioNet::create(o);
        REQUIRE_MESSAGE(d.has_value(), (d ? "" : d.error().what()));
        dev = std::move(*d);
        auto p = PacketSocket::open("kt0");
        REQUIRE_MESSAGE(p.has_value(), (p ? "" : p.error().what()));
        pkt.emplace(std::move(*p));
        activate(drop_features, with_ctrl);
    }
    ~Rig() { dev.reset(); }

    void activate(uint64_t drop_features, bool with_ctrl = false) {
        rx = std::make_unique<MockDriver>(mem, GuestAddress(0), kArea, kQueueSize);
        tx = std::make_unique<MockDriver>(mem, GuestAddress(kArea), kArea, kQueueSize);
        acked = dev->device_features() & ~drop_features;
        std::vector<QueueConfig> queues{rx->config(), tx->config()};
        if (with_ctrl) {
            ctrl = std::make_unique<MockDriver>(mem, GuestAddress(2 * kArea), kArea, 64);
            queues.push_back(ctrl->config());
        }
        auto r = dev->activate(ActivateContext{mem, acked, queues, irq, events});
        REQUIRE_MESSAGE(r.has_value(), (r ? "" : r.error().what()));
        // Like Linux's virtqueue_enable_cb: interrupt me once anything is used.
        rx->set_used_event(0);
        tx->set_used_event(0);
        events.dispatch(0);  // the wake-up that posts the first tap reads
    }

    // Offers frames (each behind its header) on the TX queue; one notify for all.
    std::vector<uint16_t> send(const std::vector<std::vector<uint8_t>>& frames, net::NetHdr h = {}) {
        std::vector<uint16_t> heads;
        auto hb = hdr_bytes(h);
        for (auto& f : frames) heads.push_back(tx->add_chain({hb, f}, {}));
        tx->set_used_event(tx->used_idx());
        tx->kick();
        dev->queue_notify(net::kTxQueue);
        return heads;
    }

    // Offers n receive buffers of `len` bytes each and notifies.
    std::vector<uint16_t> post_rx(int n, uint32_t len) {
        std::vector<uint16_t> heads;
        for (int i = 0; i < n; ++i) heads.push_back(rx->add_chain({}, {len}));
        rx->set_used_event(rx->used_idx());
        rx->kick();
        dev->queue_notify(net::kRxQueue);
        return heads;
    }

    // Runs the event loop until `n` used entries came back on driver `d` (or ~5 s).
    std::vector<std::pair<uint16_t, uint32_t>> wait_used(MockDriver& d, size_t n) {
        std::vector<std::pair<uint16_t, uint32_t>> got;
        auto until = std::chrono::steady_clock::now() + std::chrono::seconds(5);
        while (got.size() < n && std::chrono::steady_clock::now() < until) {
            while (auto u = d.next_used()) got.push_back(*u);
            if (got.size() < n) events.dispatch(20);
        }
        REQUIRE_MESSAGE(got.size() == n, "wanted " << n << " used entries, got " << got.size());
        return got;
    }
};

// A TCP/IPv4 frame (Ethernet + IP + TCP headers + payload) for segmentation offload tests.
std::vector<uint8_t> tcp4_frame(size_t payload) {
    std::vector<uint8_t> f = test_frame(14 + 20 + 20 + payload, 7);
    f[12] = 0x08;
    f[13] = 0x00;
    uint8_t* ip = f.data() + 14;
    std::memset(ip, 0, 40);
    ip[0] = 0x45;
    uint16_t tot = static_cast<uint16_t>(20 + 20 + payload);
    ip[2] = static_cast<uint8_t>(tot >> 8);
    ip[3] = static_cast<uint8_t>(tot);
    ip[6] = 0x40;  // DF
    ip[8] = 64;
    ip[9] = 6;  // TCP
    const uint8_t addrs[8] = {10, 99, 0, 1, 10, 99, 0, 2};
    std::memcpy(ip + 12, addrs, 8);
    uint32_t sum = 0;
    for (int i = 0; i < 20; i += 2) sum += (ip[i] << 8) | ip[i + 1];
    while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
    ip[10] = static_cast<uint8_t>(~sum >> 8);
    ip[11] = static_cast<uint8_t>(~sum);
    uint8_t* tcp = ip + 20;
    tcp[0] = 0x30; tcp[1] = 0x39;  // port 12345
    tcp[2] = 0x00; tcp[3] = 0x50;  // port 80
    tcp[12] = 0x50;                // data offset 5
    tcp[13] = 0x18;                // PSH|ACK
    tcp[14] = 0xff; tcp[15] = 0xff;
    return f;
}

}  // namespace

TEST_CASE("VirtioNet: features, config space, options") {
    Rig rig;
    VirtioNet& d = *rig.dev;
    CHECK(d.device_type() == 1);
    CHECK(d.num_queues() == 3);
    uint64_t f = d.device_features();
    for (uint64_t bit : {virtq::kFeatureVersion1, virtq::kFeatureEventIdx, virtq::kFeatureIndirectDesc,
                         net::kFeatureMac, net::kFeatureStatus, net::kFeatureCsum, net::kFeatureGuestCsum,
                         net::kFeatureHostTso4, net::kFeatureHostTso6, net::kFeatureGuestTso4,
                         net::kFeatureGuestTso6, net::kFeatureMrgRxbuf, net::kFeatureCtrlVq,
                         net::kFeatureGuestAnnounce})
        CHECK((f & bit) != 0);
    for (uint64_t bit : {net::kFeatureHostUfo, net::kFeatureGuestUfo, net::kFeatureMq,
                         net::kFeatureHostEcn, net::kFeatureGuestEcn})
        CHECK((f & bit) == 0);

    std::vector<uint8_t> cfg(32, 0xaa);
    d.read_config(0, cfg);
    CHECK(std::vector<uint8_t>(cfg.begin(), cfg.begin() + 6) == std::vector<uint8_t>{0x52, 0x54, 0, 0x12, 0x34, 0x56});
    CHECK(cfg[6] == net::kStatusLinkUp);
    CHECK(cfg[7] == 0);
    CHECK(cfg[24] == 0);  // past the struct
    std::vector<uint8_t> part(2);
    d.read_config(5, part);
    CHECK(part[0] == 0x56);
    CHECK(part[1] == 1);

    // Default MAC: locally administered unicast, stable for a tap name.
    MacAddress a = VirtioNet::default_mac("tap0"), b = VirtioNet::default_mac("tap0");
    CHECK(a == b);
    CHECK(a != VirtioNet::default_mac("tap1"));
    CHECK(a[0] == 0x52);
    CHECK(a[1] == 0x54);
    CHECK(a[2] == 0x00);

    VirtioNetOptions bad;
    bad.tap = "kt0";
    bad.queue_size = 100;
    CHECK_FALSE(VirtioNet::create(bad).has_value());
    bad.queue_size = 256;
    bad.mac = MacAddress{0x01, 0, 0x5e, 0, 0, 1};
    CHECK(VirtioNet::create(bad).error().message == "virtio-net: MAC address is multicast");
}

TEST_CASE("VirtioNet: a missing tap is reported with how to make one") {
    auto ns = NetnsScope::enter();
    if (!ns) FAIL(ns.error().what());
    VirtioNetOptions o;
    o.tap = "kt9";
    auto d = VirtioNet::create(o);
    REQUIRE_FALSE(d.has_value());
    CHECK(d.error().what() == "tap 'kt9' does not exist: create it with ip tuntap add kt9 mode tap");
}

TEST_CASE("VirtioNet TX: a batch of frames reaches the tap in order, one submit, one interrupt") {
    Rig rig;
    std::vector<std::vector<uint8_t>> frames{test_frame(60, 1), test_frame(1514, 2), test_frame(300, 3)};
    auto heads = rig.send(frames);
    for (auto& f : frames) {
        auto got = rig.pkt->recv_incoming(2000);
        REQUIRE(got.has_value());
        CHECK(*got == f);
    }
    auto used = rig.wait_used(*rig.tx, 3);
    for (size_t i = 0; i < 3; ++i) {
        CHECK(used[i].first == heads[i]);
        CHECK(used[i].second == 0);  // the device writes nothing into TX buffers
    }
    const NetMetrics& m = rig.dev->metrics();
    CHECK(get(m.tx_packets) == 3);
    CHECK(get(m.tx_bytes) == 60 + 1514 + 300);
    CHECK(get(m.tx_batches) == 1);
    CHECK(rig.irq.queue[net::kTxQueue] == 1);
    CHECK(get(m.tx_tap_errors) == 0);
    CHECK_FALSE(rig.dev->needs_reset());
}

TEST_CASE("VirtioNet TX: a 60 KB TSO super-frame goes to the tap whole, header honoured") {
    Rig rig;
    auto frame = tcp4_frame(60000);
    net::NetHdr h{};
    h.flags = net::kHdrFNeedsCsum;
    h.gso_type = net::kGsoTcpV4;
    h.hdr_len = 54;
    h.gso_size = 1448;
    h.csum_start = 34;
    h.csum_offset = 16;
    rig.send({frame}, h);
    auto got = rig.pkt->recv_incoming(2000);
    REQUIRE(got.has_value());
    CHECK(got->size() == frame.size());
    CHECK(*got == frame);
    rig.wait_used(*rig.tx, 1);
    CHECK(get(rig.dev->metrics().tx_packets) == 1);
    CHECK(get(rig.dev->metrics().tx_bytes) == frame.size());
}

TEST_CASE("VirtioNet TX: hostile chains and headers are returned, counted, and do not stop the queue") {
    // Without HOST_TSO4 a TCPv4 GSO header is the driver's mistake (§5.1.6.2.1).
    Rig rig(net::kFeatureHostTso4);
    auto ok1 = test_frame(100, 1), ok2 = test_frame(200, 2);
    net::NetHdr tso{};
    tso.flags = net::kHdrFNeedsCsum;
    tso.gso_type = net::kGsoTcpV4;
    tso.gso_size = 1448;
    net::NetHdr data_valid{};
    data_valid.flags = net::kHdrFDataValid;  // receive-only flag
    net::NetHdr ufo{};
    ufo.gso_type = net::kGsoUdp;
    std::vector<uint8_t> plain = hdr_bytes({}), big(net::kMaxFrameBytes + 1, 0xab), runt(13, 1);

    std::vector<uint16_t> bad;
    uint16_t h_ok1 = rig.tx->add_chain({plain, ok1}, {});
    bad.push_back(rig.tx->add_chain({hdr_bytes(tso), tcp4_frame(3000)}, {}));
    bad.push_back(rig.tx->add_chain({hdr_bytes(data_valid), ok1}, {}));
    bad.push_back(rig.tx->add_chain({hdr_bytes(ufo), ok1}, {}));
    bad.push_back(rig.tx->add_chain({plain, big}, {}));          // > 64 KiB + header
    bad.push_back(rig.tx->add_chain({plain, runt}, {}));         // no Ethernet header
    bad.push_back(rig.tx->add_chain({std::vector<uint8_t>(8)}, {}));  // not even a header
    // A descriptor pointing past guest RAM: malformed per §2.7.
    virtq::Desc outside{4 * kArea, 100, 0, 0};
    bad.push_back(rig.tx->add_raw_chain(200, std::span(&outside, 1)));
    uint16_t h_ok2 = rig.tx->add_chain({plain, ok2}, {});
    rig.tx->set_used_event(0);
    rig.tx->kick();
    rig.dev->queue_notify(net::kTxQueue);

    auto used = rig.wait_used(*rig.tx, bad.size() + 2);
    std::map<uint16_t, uint32_t> by_head(used.begin(), used.end());
    for (uint16_t b : bad) {
        REQUIRE(by_head.count(b));
        CHECK(by_head[b] == 0);
    }
    CHECK(by_head.count(h_ok1));
    CHECK(by_head.count(h_ok2));
    auto f1 = rig.pkt->recv_incoming(2000), f2 = rig.pkt->recv_incoming(2000);
    REQUIRE(f1.has_value());
    REQUIRE(f2.has_value());
    CHECK(*f1 == ok1);
    CHECK(*f2 == ok2);
    CHECK_FALSE(rig.pkt->recv_incoming(100).has_value());
    const NetMetrics& m = rig.dev->metrics();
    CHECK(get(m.tx_packets) == 2);
    CHECK(get(m.tx_bad_header) == 3);
    CHECK(get(m.tx_bad_length) == 3);
    CHECK(get(m.tx_malformed_chains) == 1);
    CHECK_FALSE(rig.dev->needs_reset());
}

TEST_CASE("VirtioNet: a broken available ring puts the device in NEEDS_RESET; reset clears it") {
    Rig rig;
    rig.tx->set_avail_idx(static_cast<uint16_t>(kQueueSize + 5));  // more heads than the queue has
    rig.dev->queue_notify(net::kTxQueue);
    CHECK(rig.dev->needs_reset());
    CHECK(get(rig.dev->metrics().queue_errors) == 1);
    rig.dev->reset();
    CHECK_FALSE(rig.dev->needs_reset());
    CHECK(rig.events.size() == 0);
}

TEST_CASE("VirtioNet RX: frames sent on the host side land in guest buffers with a 12-byte header") {
    Rig rig(net::kFeatureMrgRxbuf);
    auto heads = rig.post_rx(8, net::kMaxPacketBytes);
    std::vector<std::vector<uint8_t>> frames{test_frame(60, 1), test_frame(1514, 2), test_frame(700, 3)};
    for (auto& f : frames) REQUIRE(rig.pkt->send(f).has_value());
    auto used = rig.wait_used(*rig.rx, 3);
    for (size_t i = 0; i < 3; ++i) {
        CHECK(used[i].first == heads[i]);  // in order, one chain per frame
        CHECK(used[i].second == net::kHdrBytes + frames[i].size());
        auto bytes = rig.rx->read_writable(used[i].first, used[i].second);
        net::NetHdr h = hdr_of(bytes);
        CHECK(h.flags == 0);
        CHECK(h.gso_type == net::kGsoNone);
        CHECK(h.num_buffers == 1);  // §5.1.6.4 without MRG_RXBUF
        CHECK(std::vector<uint8_t>(bytes.begin() + net::kHdrBytes, bytes.end()) == frames[i]);
    }
    const NetMetrics& m = rig.dev->metrics();
    CHECK(get(m.rx_packets) == 3);
    CHECK(get(m.rx_bytes) == 60 + 1514 + 700);
    CHECK(get(m.rx_drops_too_big) == 0);
    CHECK(rig.irq.queue[net::kRxQueue] >= 1);
    CHECK(rig.irq.queue[net::kRxQueue] <= 3);
    CHECK(get(m.interrupts) == static_cast<uint64_t>(rig.irq.queue[net::kRxQueue] + rig.irq.queue[net::kTxQueue]));
}

TEST_CASE("VirtioNet RX with MRG_RXBUF: a big frame spans several chains, num_buffers in the first") {
    Rig rig(0, "65000");  // a big MTU lets the host send a 20 KB frame without offloads
    auto heads = rig.post_rx(16, 4096);
    auto frame = test_frame(20000, 9);
    REQUIRE(rig.pkt->send(frame).has_value());
    size_t total = net::kHdrBytes + frame.size();
    size_t n = (total + 4095) / 4096;  // 5
    auto used = rig.wait_used(*rig.rx, n);
    std::vector<uint8_t> joined;
    for (size_t i = 0; i < n; ++i) {
        CHECK(used[i].first == heads[i]);
        CHECK(used[i].second == (i + 1 < n ? 4096 : total - 4096 * (n - 1)));
        auto part = rig.rx->read_writable(used[i].first, used[i].second);
        joined.insert(joined.end(), part.begin(), part.end());
    }
    CHECK(hdr_of(joined).num_buffers == n);
    CHECK(std::vector<uint8_t>(joined.begin() + net::kHdrBytes, joined.end()) == frame);

    // Small frames after it take one chain each, num_buffers 1.
    REQUIRE(rig.pkt->send(test_frame(100, 1)).has_value());
    auto one = rig.wait_used(*rig.rx, 1);
    CHECK(one[0].first == heads[n]);
    CHECK(hdr_of(rig.rx->read_writable(one[0].first, 12)).num_buffers == 1);
    const NetMetrics& m = rig.dev->metrics();
    CHECK(get(m.rx_packets) == 2);
    CHECK(get(m.rx_buffers_used) == n + 1);
}

TEST_CASE("VirtioNet RX: with no guest buffers reading pauses, nothing is dropped, and resumes on notify") {
    Rig rig;
    constexpr int kFrames = 40;  // more than the device reads ahead (kRxSlots)
    for (int i = 0; i < kFrames; ++i) REQUIRE(rig.pkt->send(test_frame(200, static_cast<uint8_t>(i))).has_value());
    for (int i = 0; i < 10; ++i) rig.events.dispatch(20);
    const NetMetrics& m = rig.dev->metrics();
    CHECK(get(m.rx_packets) == 0);
    CHECK(get(m.rx_stalls) >= 1);
    CHECK(get(m.rx_drops_too_big) == 0);

    // Fewer buffers than frames: delivery stops again when they run out. (Payloads are read
    // before the driver reuses descriptor indices for new buffers.)
    std::vector<std::vector<uint8_t>> got;
    auto collect = [&](const std::vector<std::pair<uint16_t, uint32_t>>& used) {
        for (auto [head, len] : used) got.push_back(rig.rx->read_writable(head, len));
    };
    rig.post_rx(10, 2048);
    collect(rig.wait_used(*rig.rx, 10));
    for (int i = 0; i < 10; ++i) rig.events.dispatch(10);
    CHECK_FALSE(rig.rx->next_used().has_value());
    CHECK(get(m.rx_stalls) >= 2);

    rig.post_rx(kFrames - 10, 2048);
    collect(rig.wait_used(*rig.rx, kFrames - 10));
    for (int i = 0; i < kFrames; ++i) {
        REQUIRE(got[i].size() == 12 + 200);
        CHECK(std::vector<uint8_t>(got[i].begin() + 12, got[i].end()) == test_frame(200, static_cast<uint8_t>(i)));
    }
    CHECK(get(m.rx_packets) == kFrames);
    CHECK(get(m.rx_drops_too_big) == 0);
    CHECK(get(m.rx_tap_errors) == 0);
}

TEST_CASE("VirtioNet RX without MRG_RXBUF: a frame too big for the buffer is dropped, the buffer reused") {
    Rig rig(net::kFeatureMrgRxbuf);
    auto heads = rig.post_rx(1, 512);
    REQUIRE(rig.pkt->send(test_frame(1000, 1)).has_value());
    for (int i = 0; i < 20 && get(rig.dev->metrics().rx_drops_too_big) == 0; ++i) rig.events.dispatch(20);
    CHECK(get(rig.dev->metrics().rx_drops_too_big) == 1);
    CHECK_FALSE(rig.rx->next_used().has_value());
    auto small = test_frame(300, 2);
    REQUIRE(rig.pkt->send(small).has_value());
    auto used = rig.wait_used(*rig.rx, 1);
    CHECK(used[0].first == heads[0]);
    CHECK(used[0].second == 12 + 300);
}

TEST_CASE("VirtioNet RX: hostile receive chains are returned with length 0 and skipped") {
    Rig rig;
    std::vector<uint8_t> junk(64, 1);
    uint16_t readable = rig.rx->add_chain({junk}, {2048});  // RX buffers are write-only
    uint16_t tiny = rig.rx->add_chain({}, {8});               // no room for the header
    virtq::Desc outside{4 * kArea, 4096, virtq::kDescFWrite, 0};
    uint16_t wild = rig.rx->add_raw_chain(250, std::span(&outside, 1));
    uint16_t good = rig.rx->add_chain({}, {2048});
    rig.rx->set_used_event(0);
    rig.rx->kick();
    rig.dev->queue_notify(net::kRxQueue);
    auto f = test_frame(128, 5);
    REQUIRE(rig.pkt->send(f).has_value());
    auto used = rig.wait_used(*rig.rx, 4);
    std::map<uint16_t, uint32_t> by(used.begin(), used.end());
    CHECK(by[readable] == 0);
    CHECK(by[tiny] == 0);
    CHECK(by[wild] == 0);
    CHECK(by[good] == 12 + 128);
    CHECK(get(rig.dev->metrics().rx_malformed_chains) == 3);
    CHECK_FALSE(rig.dev->needs_reset());
}

TEST_CASE("VirtioNet: reset cancels posted reads promptly; frames wait in the tap for the next activation") {
    Rig rig;
    rig.post_rx(4, 2048);
    auto t0 = std::chrono::steady_clock::now();
    rig.dev->reset();
    CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::seconds(1));
    CHECK(rig.events.size() == 0);
    // Nobody reads the tap now: the frame stays queued in the kernel.
    auto f = test_frame(90, 4);
    REQUIRE(rig.pkt->send(f).has_value());
    rig.events.dispatch(50);
    CHECK(get(rig.dev->metrics().rx_packets) == 0);

    rig.activate(0);
    rig.post_rx(4, 2048);
    auto used = rig.wait_used(*rig.rx, 1);
    auto bytes = rig.rx->read_writable(used[0].first, used[0].second);
    CHECK(std::vector<uint8_t>(bytes.begin() + 12, bytes.end()) == f);

    // And TX works after re-activation too.
    auto g = test_frame(80, 6);
    rig.send({g});
    auto got = rig.pkt->recv_incoming(2000);
    REQUIRE(got.has_value());
    CHECK(*got == g);
}

TEST_CASE("VirtioNet: activation needs VERSION_1 (12-byte headers)") {
    Rig rig;
    rig.dev->reset();
    auto r = rig.dev->activate(ActivateContext{rig.mem, rig.dev->device_features() & ~virtq::kFeatureVersion1,
                                               {rig.rx->config(), rig.tx->config()}, rig.irq, rig.events});
    REQUIRE_FALSE(r.has_value());
    CHECK(rig.events.size() == 0);
}

namespace {

// Sends `frame` on kt0 as a CHECKSUM_PARTIAL TCP packet (AF_PACKET with PACKET_VNET_HDR):
// the host stack leaves the TCP checksum to the device, here the tap.
void send_partial_csum(const std::vector<uint8_t>& frame) {
    int fd = ::socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, htons(ETH_P_ALL));
    REQUIRE(fd >= 0);
    UniqueFd guard(fd);
    int on = 1;
    REQUIRE(::setsockopt(fd, SOL_PACKET, PACKET_VNET_HDR, &on, sizeof on) == 0);
    sockaddr_ll sll{};
    sll.sll_family = AF_PACKET;
    sll.sll_protocol = htons(ETH_P_ALL);
    sll.sll_ifindex = static_cast<int>(::if_nametoindex("kt0"));
    REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&sll), sizeof sll) == 0);
    net::NetHdr h{};
    h.flags = net::kHdrFNeedsCsum;
    h.csum_start = 34;
    h.csum_offset = 16;
    std::vector<uint8_t> pkt(10);  // AF_PACKET takes the 10-byte virtio_net_hdr
    std::memcpy(pkt.data(), &h, 10);
    pkt.insert(pkt.end(), frame.begin(), frame.end());
    REQUIRE(::send(fd, pkt.data(), pkt.size(), 0) == static_cast<ssize_t>(pkt.size()));
}

// One's-complement sum over the TCP pseudo-header and segment: 0xffff when the checksum is right.
uint16_t tcp4_sum(const std::vector<uint8_t>& f) {
    const uint8_t* ip = f.data() + 14;
    size_t tcp_len = f.size() - 34;
    uint32_t sum = 0;
    for (int i = 12; i < 20; i += 2) sum += (ip[i] << 8) | ip[i + 1];
    sum += 6 + static_cast<uint32_t>(tcp_len);
    for (size_t i = 0; i < tcp_len; i += 2)
        sum += (f[34 + i] << 8) | (i + 1 < tcp_len ? f[34 + i + 1] : 0);
    while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
    return static_cast<uint16_t>(sum);
}

}  // namespace

TEST_CASE("VirtioNet RX: checksum offload follows GUEST_CSUM (TUNSETOFFLOAD per acked features)") {
    auto frame = tcp4_frame(500);
    // CHECKSUM_PARTIAL convention: the field holds the pseudo-header sum, the rest is summed later.
    {
        uint32_t sum = 6 + static_cast<uint32_t>(frame.size() - 34);
        for (int i = 26; i < 34; i += 2) sum += (frame[i] << 8) | frame[i + 1];
        while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
        frame[50] = static_cast<uint8_t>(sum >> 8);
        frame[51] = static_cast<uint8_t>(sum);
    }
    SUBCASE("GUEST_CSUM acked: the partial checksum reaches the guest with NEEDS_CSUM") {
        Rig rig;
        rig.post_rx(2, 4096);
        send_partial_csum(frame);
        auto used = rig.wait_used(*rig.rx, 1);
        auto bytes = rig.rx->read_writable(used[0].first, used[0].second);
        net::NetHdr h = hdr_of(bytes);
        CHECK((h.flags & net::kHdrFNeedsCsum) != 0);
        CHECK(h.csum_start == 34);
        CHECK(h.csum_offset == 16);
        CHECK(h.num_buffers == 1);
        CHECK(std::vector<uint8_t>(bytes.begin() + 12, bytes.end()) == frame);  // untouched
    }
    SUBCASE("GUEST_CSUM not acked: the host completes the checksum, flags are zero") {
        Rig rig(net::kFeatureGuestCsum | net::kFeatureGuestTso4 | net::kFeatureGuestTso6);
        rig.post_rx(2, 4096);
        send_partial_csum(frame);
        auto used = rig.wait_used(*rig.rx, 1);
        auto bytes = rig.rx->read_writable(used[0].first, used[0].second);
        net::NetHdr h = hdr_of(bytes);
        CHECK(h.flags == 0);
        CHECK(h.gso_type == net::kGsoNone);
        std::vector<uint8_t> got(bytes.begin() + 12, bytes.end());
        REQUIRE(got.size() == frame.size());
        CHECK(tcp4_sum(got) == 0xffff);
        CHECK(std::vector<uint8_t>(got.begin() + 54, got.end()) == std::vector<uint8_t>(frame.begin() + 54, frame.end()));
    }
}

// Rate limiting (devices/rate_limiter.hpp): exact counts of held frames and timer wake-ups.
TEST_CASE("VirtioNet TX rate limit: frames beyond the ops bucket wait for the TX limiter's timer") {
    Rig rig;
    rig.dev->tx_rate_limiter().update({std::nullopt, BucketParams{1, 0, 20}});  // a frame per 20 ms
    std::vector<std::vector<uint8_t>> frames;
    for (uint8_t i = 0; i < 5; ++i) frames.push_back(test_frame(100 + i, i));
    auto heads = rig.send(frames);
    auto first = rig.pkt->recv_incoming(2000);
    REQUIRE(first.has_value());
    CHECK(*first == frames[0]);
    CHECK(get(rig.dev->metrics().tx_packets) == 1);  // the rest wait in the guest's ring
    auto used = rig.wait_used(*rig.tx, 5);
    for (size_t i = 0; i < 5; ++i) CHECK(used[i].first == heads[i]);
    for (size_t i = 1; i < 5; ++i) {
        auto got = rig.pkt->recv_incoming(2000);
        REQUIRE(got.has_value());
        CHECK(*got == frames[i]);
    }
    CHECK(rig.dev->tx_rate_limiter().wakeups() == 4);
    CHECK(rig.dev->tx_rate_limiter().throttled() == 4);
    CHECK(rig.dev->rx_rate_limiter().throttled() == 0);
}

TEST_CASE("VirtioNet RX rate limit: frames wait in the device and the tap, none dropped, delivered in order") {
    Rig rig;
    // 1000 bytes per 10 ms: two 400-byte frames per bucket.
    rig.dev->rx_rate_limiter().update({BucketParams{1000, 0, 10}, std::nullopt});
    constexpr int kFrames = 40;  // more than the device reads ahead (kRxSlots)
    rig.post_rx(kFrames, 2048);
    for (int i = 0; i < kFrames; ++i) REQUIRE(rig.pkt->send(test_frame(400, static_cast<uint8_t>(i))).has_value());
    auto used = rig.wait_used(*rig.rx, kFrames);
    for (int i = 0; i < kFrames; ++i) {
        auto bytes = rig.rx->read_writable(used[static_cast<size_t>(i)].first, used[static_cast<size_t>(i)].second);
        REQUIRE(bytes.size() == 12 + 400);
        CHECK(std::vector<uint8_t>(bytes.begin() + 12, bytes.end()) == test_frame(400, static_cast<uint8_t>(i)));
    }
    const NetMetrics& m = rig.dev->metrics();
    CHECK(get(m.rx_packets) == kFrames);
    CHECK(get(m.rx_drops_too_big) == 0);
    // The first bucket takes two frames at once; after that each wake-up comes when the next
    // frame's tokens are there, so it lets at least one through, and at most two (a bucket).
    const uint64_t w = rig.dev->rx_rate_limiter().wakeups();
    MESSAGE("RX timer wake-ups for " << kFrames << " frames: " << w);
    CHECK(w >= (kFrames - 2) / 2);
    CHECK(w <= kFrames - 2);
    CHECK(w == rig.dev->rx_rate_limiter().throttled());
}

TEST_CASE("VirtioNet: detach_tap lets another user take the tap; attach_tap carries on where it stopped") {
    Rig rig;
    auto posted = rig.post_rx(4, 2048);
    auto before = test_frame(70, 8);
    REQUIRE(rig.pkt->send(before).has_value());
    CHECK(rig.wait_used(*rig.rx, 1)[0].first == posted[0]);
    // A tap without multi_queue takes one user: while the device holds it, nobody else can.
    CHECK_FALSE(Tap::open_by_name("kt0").has_value());

    REQUIRE(rig.dev->detach_tap().has_value());
    CHECK_FALSE(rig.dev->tap_attached());
    CHECK(rig.dev->tap_fd() == -1);
    CHECK(rig.events.size() == 0);
    CHECK(rig.dev->tap_name() == "kt0");
    CHECK(rig.dev->detach_tap().has_value());  // detached already: nothing to do
    auto no_announce = rig.dev->announce(1);
    REQUIRE_FALSE(no_announce.has_value());
    CHECK(no_announce.error().what() == "virtio-net: tap 'kt0' is not attached; the guest's MAC is not announced");

    {
        // The other side of a live migration on this host can attach it now.
        auto other = Tap::open_by_name("kt0");
        REQUIRE_MESSAGE(other.has_value(), (other ? "" : other.error().what()));
    }
    auto tap = Tap::open_by_name("kt0");
    REQUIRE_MESSAGE(tap.has_value(), (tap ? "" : tap.error().what()));
    REQUIRE(rig.dev->attach_tap(std::move(*tap)).has_value());
    CHECK(rig.dev->tap_attached());
    CHECK(rig.dev->tap_fd() >= 0);
    CHECK(rig.events.size() > 0);
    rig.events.dispatch(0);  // the wake-up that posts the tap reads again

    // The receive buffers the driver posted before the hand-over are used, in order, from
    // where the device stopped (a device starting over from index 0 would reuse posted[0]).
    auto f = test_frame(100, 9);
    REQUIRE(rig.pkt->send(f).has_value());
    auto used = rig.wait_used(*rig.rx, 1);
    CHECK(used[0].first == posted[1]);
    auto bytes = rig.rx->read_writable(used[0].first, used[0].second);
    CHECK(std::vector<uint8_t>(bytes.begin() + net::kHdrBytes, bytes.end()) == f);
    auto g = test_frame(80, 6);
    rig.send({g});
    auto got = rig.pkt->recv_incoming(2000);
    REQUIRE(got.has_value());
    CHECK(*got == g);

    // One tap at a time.
    REQUIRE(NetnsScope::ip("tuntap add kt1 mode tap").has_value());
    auto second = Tap::open_by_name("kt1");
    REQUIRE(second.has_value());
    auto twice = rig.dev->attach_tap(std::move(*second));
    REQUIRE_FALSE(twice.has_value());
    CHECK(twice.error().what() == "virtio-net: tap 'kt0' is attached already");
}

TEST_CASE("VirtioNet defer_if_busy: a free tap is attached now, a busy one later; unattached it cannot run") {
    auto ns = NetnsScope::enter();
    REQUIRE_MESSAGE(ns.has_value(), (ns ? "" : ns.error().what()));
    VirtioNetOptions o;
    o.tap = "kt5";
    o.defer_if_busy = true;
    auto missing = VirtioNet::create(o);
    REQUIRE_FALSE(missing.has_value());
    CHECK(missing.error().what() == "tap 'kt5' does not exist: create it with ip tuntap add kt5 mode tap");

    REQUIRE(NetnsScope::ip("tuntap add kt5 mode tap").has_value());
    {
        auto free = VirtioNet::create(o);  // nobody holds it: attached at once
        REQUIRE_MESSAGE(free.has_value(), (free ? "" : free.error().what()));
        CHECK((*free)->tap_attached());
    }
    // The migration's source on this host, still holding it.
    auto source = Tap::open_by_name("kt5");
    REQUIRE(source.has_value());
    auto d = VirtioNet::create(o);
    REQUIRE_MESSAGE(d.has_value(), (d ? "" : d.error().what()));
    CHECK_FALSE((*d)->tap_attached());
    o.defer_if_busy = false;
    auto refused = VirtioNet::create(o);  // without the option a busy tap is an error
    REQUIRE_FALSE(refused.has_value());
    CHECK(refused.error().sys_errno == EBUSY);

    GuestRegionSpec spec{GuestAddress(0), 2 * kArea};
    auto mem = GuestMemory::create(std::span(&spec, 1));
    REQUIRE(mem.has_value());
    MockDriver rx(*mem, GuestAddress(0), kArea, kQueueSize), tx(*mem, GuestAddress(kArea), kArea, kQueueSize);
    FakeRegistry events;
    CountingInterrupt irq;
    auto r = (*d)->activate(ActivateContext{*mem, (*d)->device_features(), {rx.config(), tx.config()}, irq, events});
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error().what() == "virtio-net: tap 'kt5' is not attached");

    // The source lets go; the destination takes it.
    source = std::unexpected(Error{"gone"});
    auto tap = Tap::open_by_name("kt5");
    REQUIRE_MESSAGE(tap.has_value(), (tap ? "" : tap.error().what()));
    REQUIRE((*d)->attach_tap(std::move(*tap)).has_value());
    CHECK((*d)->tap_attached());

    o.tap.clear();
    o.defer_if_busy = true;
    auto nameless = VirtioNet::create(o);
    REQUIRE_FALSE(nameless.has_value());
    CHECK(nameless.error().what() == "virtio-net: a tap attached later needs its name");
}

TEST_CASE("VirtioNet: GUEST_ANNOUNCE asks the driver, whose ANNOUNCE_ACK clears the status bit (§5.1.6.5.3)") {
    Rig rig(0, nullptr, /*with_ctrl=*/true);
    const NetMetrics& m = rig.dev->metrics();
    auto status = [&] {
        std::vector<uint8_t> st(2);
        rig.dev->read_config(6, st);
        return static_cast<uint16_t>(st[0] | st[1] << 8);
    };
    // Sends one control command (class, command, data) with a one-byte ack; returns (used len, ack).
    auto command = [&](std::vector<uint8_t> cmd, std::vector<uint32_t> writable = {1}) {
        uint16_t head = rig.ctrl->add_chain({cmd}, writable);
        rig.ctrl->set_used_event(rig.ctrl->used_idx());
        rig.ctrl->kick();
        rig.dev->queue_notify(net::kCtrlQueue);
        auto u = rig.ctrl->next_used();  // answered on the notify, never later
        REQUIRE(u.has_value());
        CHECK(u->first == head);
        auto ack = rig.ctrl->read_writable(head, u->second);
        return std::pair<uint32_t, int>(u->second, ack.empty() ? -1 : ack[0]);
    };

    CHECK(status() == net::kStatusLinkUp);
    REQUIRE(rig.dev->announce(3).has_value());
    CHECK(status() == (net::kStatusLinkUp | net::kStatusAnnounce));
    CHECK(rig.irq.config == 1);
    CHECK(get(m.announce_requests) == 1);
    // No RARP went out: the guest announces itself, with its IP addresses.
    CHECK_FALSE(rig.pkt->recv_incoming(200).has_value());

    // Commands the device does not offer are refused and change nothing.
    auto mac_set = command({1, 1, 1, 2, 3, 4, 5, 6});  // VIRTIO_NET_CTRL_MAC_ADDR_SET
    CHECK(mac_set == std::pair<uint32_t, int>(1, net::kCtrlErr));
    auto short_cmd = command({net::kCtrlClassAnnounce});
    CHECK(short_cmd == std::pair<uint32_t, int>(1, net::kCtrlErr));
    CHECK(status() == (net::kStatusLinkUp | net::kStatusAnnounce));
    // A chain with no room for the ack gets no answer (used length 0), and no crash.
    auto no_ack = command({net::kCtrlClassAnnounce, net::kCtrlAnnounceAck}, {});
    CHECK(no_ack.first == 0);
    CHECK(get(m.announce_acks) == 0);

    auto ack = command({net::kCtrlClassAnnounce, net::kCtrlAnnounceAck});
    CHECK(ack == std::pair<uint32_t, int>(1, net::kCtrlOk));
    CHECK(status() == net::kStatusLinkUp);
    CHECK(get(m.announce_acks) == 1);
    CHECK(get(m.ctrl_requests) == 4);
    CHECK(get(m.ctrl_refused) == 3);
    CHECK(rig.irq.queue[net::kCtrlQueue] >= 1);

    // The control queue's position is part of the device's state.
    auto pos = rig.dev->settle_queues();
    REQUIRE(pos.has_value());
    REQUIRE(pos->size() == 3);
    REQUIRE((*pos)[net::kCtrlQueue].has_value());
    CHECK((*pos)[net::kCtrlQueue]->next_avail == 4);

    // Reset forgets a pending announcement.
    REQUIRE(rig.dev->announce(1).has_value());
    rig.dev->reset();
    CHECK(status() == net::kStatusLinkUp);
}

TEST_CASE("VirtioNet: without GUEST_ANNOUNCE the device announces the MAC with RARP frames") {
    Rig rig(net::kFeatureGuestAnnounce, nullptr, /*with_ctrl=*/true);
    REQUIRE(rig.dev->announce(2).has_value());
    CHECK(rig.irq.config == 0);
    for (int i = 0; i < 2; ++i) {
        auto f = rig.pkt->recv_incoming(2000);
        REQUIRE(f.has_value());
        REQUIRE(f->size() >= 42);
        CHECK(std::vector<uint8_t>(f->begin(), f->begin() + 6) == std::vector<uint8_t>(6, 0xff));
        CHECK(std::vector<uint8_t>(f->begin() + 6, f->begin() + 12) == std::vector<uint8_t>{0x52, 0x54, 0, 0x12, 0x34, 0x56});
        CHECK((*f)[12] == 0x80);
        CHECK((*f)[13] == 0x35);
        CHECK((*f)[21] == 3);  // RARP opcode 3
    }
    // An ANNOUNCE_ACK from a driver that did not negotiate the feature is refused.
    uint8_t cmd[2] = {net::kCtrlClassAnnounce, net::kCtrlAnnounceAck};
    uint16_t head = rig.ctrl->add_chain({std::span<const uint8_t>(cmd, 2)}, {1});
    rig.ctrl->kick();
    rig.dev->queue_notify(net::kCtrlQueue);
    auto u = rig.ctrl->next_used();
    REQUIRE(u.has_value());
    CHECK(rig.ctrl->read_writable(head, u->second) == std::vector<uint8_t>{net::kCtrlErr});
}
