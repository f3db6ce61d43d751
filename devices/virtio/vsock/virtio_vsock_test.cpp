#include "devices/virtio/vsock/virtio_vsock.hpp"

#include <doctest/doctest.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "devices/virtio/queue/mock_driver.hpp"
#include "devices/virtio/queue/virtq_spec.hpp"
#include "devices/virtio/vsock/test_temp_dir.hpp"
#include "devices/virtio/vsock/unix_socket.hpp"

using namespace kestrel;
using kestrel::test::TempDir;
using vsock::Header;
using vsock::Op;

namespace {

// Plays the VMM's level-triggered epoll loop: remembers registrations (with their interest
// set), polls the fds, runs the callbacks. Hang-ups and errors are reported whatever the
// interest, as epoll does.
class FakeRegistry final : public EventRegistry {
public:
    Result<void> add(int fd, uint32_t events, Callback cb) override {
        if (regs_.count(fd)) return fail("fd {} already registered", fd);
        regs_[fd] = {events, std::move(cb)};
        return {};
    }
    Result<void> remove(int fd) override {
        if (!regs_.erase(fd)) return fail("fd {} not registered", fd);
        return {};
    }
    bool registered(int fd) const { return regs_.count(fd) != 0; }
    uint32_t interest(int fd) const { return regs_.at(fd).events; }
    size_t size() const { return regs_.size(); }

    // One epoll_wait-like round; returns how many callbacks ran.
    int dispatch(int timeout_ms = 0) {
        std::vector<pollfd> fds;
        for (auto& [fd, r] : regs_) {
            short ev = 0;
            if (r.events & EPOLLIN) ev |= POLLIN;
            if (r.events & EPOLLOUT) ev |= POLLOUT;
            fds.push_back(pollfd{fd, ev, 0});
        }
        if (fds.empty() || ::poll(fds.data(), fds.size(), timeout_ms) <= 0) return 0;
        int ran = 0;
        for (auto& p : fds) {
            if (p.revents == 0) continue;
            auto it = regs_.find(p.fd);
            if (it == regs_.end()) continue;
            auto cb = it->second.cb;
            cb(static_cast<uint32_t>(p.revents));  // POLL* and EPOLL* bits coincide
            ++ran;
        }
        return ran;
    }
    // Runs rounds until nothing is ready (bounded: a spinning registration fails the test).
    int settle() {
        int rounds = 0;
        while (dispatch(0) > 0) {
            if (++rounds > 1000) {
                FAIL("event loop does not settle: a registration keeps firing");
                break;
            }
        }
        return rounds;
    }

private:
    struct Reg {
        uint32_t events;
        EventRegistry::Callback cb;
    };
    std::map<int, Reg> regs_;
};

class CountingInterrupt final : public VirtioInterrupt {
public:
    void signal_queue(uint16_t q) override { queue[q]++; }
    void signal_config() override { config++; }
    std::map<uint16_t, int> queue;
    int config = 0;
};

constexpr uint64_t kGuestCid = 3;
constexpr uint64_t kAreaPerQueue = 4 << 20;
constexpr uint16_t kQueueSize = 256;

GuestMemory make_memory() {
    GuestRegionSpec spec{GuestAddress(0), kAreaPerQueue * 3};
    auto m = GuestMemory::create(std::span(&spec, 1));
    REQUIRE(m.has_value());
    return std::move(*m);
}

std::vector<uint8_t> to_bytes(const Header& h) {
    std::vector<uint8_t> v(sizeof h);
    std::memcpy(v.data(), &h, sizeof h);
    return v;
}
std::vector<uint8_t> to_bytes(std::string_view s) { return {s.begin(), s.end()}; }

// The header as the mock guest sees it: an unpacked copy, so doctest can bind its fields.
struct Fields {
    uint64_t src_cid, dst_cid;
    uint32_t src_port, dst_port, len;
    uint16_t type, op;
    uint32_t flags, buf_alloc, fwd_cnt;
};

Fields unpack(const Header& h) {
    return Fields{h.src_cid, h.dst_cid, h.src_port, h.dst_port, h.len,
                  h.type,    h.op,      h.flags,    h.buf_alloc, h.fwd_cnt};
}

struct Packet {
    Fields h{};
    std::vector<uint8_t> payload;
    uint32_t used_len = 0;
    Op op() const { return static_cast<Op>(h.op); }
    std::string text() const { return {payload.begin(), payload.end()}; }
};

// Reads everything available within `ms`, or until `want` bytes arrived.
std::string host_read(int fd, size_t want = SIZE_MAX, int ms = 1000) {
    std::string out;
    while (out.size() < want) {
        pollfd p{fd, POLLIN, 0};
        if (::poll(&p, 1, ms) <= 0) break;
        char buf[65536];
        ssize_t n = ::read(fd, buf, std::min(sizeof buf, want - out.size()));
        if (n <= 0) break;
        out.append(buf, static_cast<size_t>(n));
    }
    return out;
}

// True when the host end sees EOF (the device closed or shut down its side). A close with
// bytes still unread by the device shows as ECONNRESET on a unix socket: that counts too.
bool host_sees_eof(int fd, int ms = 1000) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, ms) <= 0) return false;
    char c;
    ssize_t n = ::read(fd, &c, 1);
    return n == 0 || (n < 0 && errno == ECONNRESET);
}

void host_write(int fd, std::string_view s) {
    REQUIRE(::write(fd, s.data(), s.size()) == static_cast<ssize_t>(s.size()));
}

// The device, activated with mock drivers on its three queues; the mock drivers play the
// guest's vsock transport.
struct Rig {
    TempDir dir;
    std::string path = dir.file("v.sock");
    GuestMemory mem = make_memory();
    FakeRegistry events;
    CountingInterrupt irq;
    std::unique_ptr<VirtioVsock> dev;
    MockDriver rxq{mem, GuestAddress(0), kAreaPerQueue, kQueueSize};
    MockDriver txq{mem, GuestAddress(kAreaPerQueue), kAreaPerQueue, kQueueSize};
    MockDriver evq{mem, GuestAddress(2 * kAreaPerQueue), kAreaPerQueue, kQueueSize};
    uint32_t guest_buf_alloc = 64 * 1024;  // what the mock guest advertises

    explicit Rig(VirtioVsockOptions opts = {}) {
        opts.guest_cid = kGuestCid;
        if (opts.uds_path.empty()) opts.uds_path = path;
        path = opts.uds_path;
        auto d = VirtioVsock::create(opts);
        REQUIRE(d.has_value());
        dev = std::move(*d);
        activate();
    }
    void activate() {
        auto r = dev->activate(ActivateContext{mem, dev->device_features(),
                                               {rxq.config(), txq.config(), evq.config()}, irq,
                                               events});
        REQUIRE(r.has_value());
    }
    uint64_t m(const VsockMetrics::Counter& c) const { return VsockMetrics::get(c); }

    // Linux 6.1 style rx buffers: a 44-byte header descriptor and a separate payload one.
    void give_rx(int n, uint32_t payload = 4096) {
        for (int i = 0; i < n; ++i) rxq.add_chain({}, {vsock::kHeaderBytes, payload});
        rxq.kick();
        dev->queue_notify(vsock::kRxQueue);
    }

    std::optional<Packet> recv() {
        auto u = rxq.next_used();
        if (!u) return std::nullopt;
        Packet p;
        p.used_len = u->second;
        auto bytes = rxq.read_writable(u->first, u->second);
        if (bytes.size() < sizeof(Header)) return p;  // zero-length completion
        Header raw;
        std::memcpy(&raw, bytes.data(), sizeof raw);
        p.h = unpack(raw);
        p.payload.assign(bytes.begin() + sizeof(Header), bytes.end());
        return p;
    }
    // Runs the event loop until the guest receives a packet.
    Packet expect_packet() {
        for (int i = 0; i < 100; ++i) {
            if (auto p = recv()) return *p;
            events.dispatch(20);
        }
        FAIL("guest received no packet");
        return {};
    }
    void expect_no_packet() {
        events.settle();
        auto p = recv();
        CHECK_MESSAGE(!p, "unexpected packet op " << (p ? p->h.op : 0));
    }

    Header hdr(Op op, uint32_t guest_port, uint32_t host_port, uint32_t len = 0) const {
        Header h{};
        h.src_cid = kGuestCid;
        h.dst_cid = vsock::kHostCid;
        h.src_port = guest_port;
        h.dst_port = host_port;
        h.len = len;
        h.type = vsock::kTypeStream;
        h.op = static_cast<uint16_t>(op);
        h.buf_alloc = guest_buf_alloc;
        h.fwd_cnt = guest_fwd_cnt;
        return h;
    }
    uint32_t guest_fwd_cnt = 0;  // what the mock guest has consumed

    // Sends one packet on the tx queue (header and payload in separate descriptors, as Linux
    // 6.1 does); checks that the device returned it with used length 0.
    void send(const Header& h, std::string_view payload = {}) {
        auto hb = to_bytes(h);
        auto pb = to_bytes(payload);
        uint16_t head = payload.empty() ? txq.add_chain({hb}, {}) : txq.add_chain({hb, pb}, {});
        txq.kick();
        dev->queue_notify(vsock::kTxQueue);
        auto u = txq.next_used();
        REQUIRE(u.has_value());
        CHECK(u->first == head);
        CHECK(u->second == 0);
    }
    void send_raw(std::vector<std::vector<uint8_t>> readable) {
        std::vector<std::span<const uint8_t>> r;
        for (auto& v : readable) r.emplace_back(v);
        txq.add_chain(r, {});
        txq.kick();
        dev->queue_notify(vsock::kTxQueue);
        auto u = txq.next_used();
        REQUIRE(u.has_value());
        CHECK(u->second == 0);
    }

    // Host program connects and asks for guest port `port`; returns its fd and the REQUEST
    // the guest saw.
    std::pair<UniqueFd, Packet> host_connect(uint32_t port) {
        auto fd = connect_unix(path);
        REQUIRE(fd.has_value());
        host_write(fd->get(), fmt::format("CONNECT {}\n", port));
        Packet req = expect_packet();
        return {std::move(*fd), req};
    }

    // Full host-initiated handshake; returns (host fd, host port).
    std::pair<UniqueFd, uint32_t> host_established(uint32_t guest_port) {
        auto [fd, req] = host_connect(guest_port);
        REQUIRE(req.op() == Op::Request);
        send(hdr(Op::Response, guest_port, req.h.src_port));
        std::string ok = host_read(fd.get(), fmt::format("OK {}\n", req.h.src_port).size());
        REQUIRE(ok == fmt::format("OK {}\n", req.h.src_port));
        return {std::move(fd), req.h.src_port};
    }
};

void check_to_guest(const Packet& p, Op op, uint32_t host_port, uint32_t guest_port) {
    CHECK(p.h.src_cid == vsock::kHostCid);
    CHECK(p.h.dst_cid == kGuestCid);
    CHECK(p.h.src_port == host_port);
    CHECK(p.h.dst_port == guest_port);
    CHECK(p.h.type == vsock::kTypeStream);
    CHECK(p.op() == op);
    CHECK(p.used_len == sizeof(Header) + p.h.len);
}

// A unix listener at <path>_<port>, as a host service for guest-initiated connections.
struct HostService {
    UnixListener l;
    explicit HostService(const std::string& path) : l(std::move(*UnixListener::create(path))) {}
    UniqueFd accept() {
        for (int i = 0; i < 100; ++i) {
            auto fd = l.accept();
            REQUIRE(fd.has_value());
            if (fd->valid()) return std::move(*fd);
            ::usleep(10000);
        }
        FAIL("no connection to the host service");
        return {};
    }
};

}  // namespace

TEST_CASE("VirtioVsock: identity, features, config space (virtio 1.2 §5.10.1-4)") {
    Rig rig;
    VirtioVsock& d = *rig.dev;
    CHECK(d.device_type() == 19);
    CHECK(d.num_queues() == 3);
    CHECK(d.max_queue_size() == 256);
    uint64_t f = d.device_features();
    CHECK((f & virtq::kFeatureVersion1) != 0);
    CHECK((f & virtq::kFeatureEventIdx) != 0);
    CHECK((f & virtq::kFeatureIndirectDesc) != 0);
    CHECK((f & vsock::kFeatureStream) != 0);
    CHECK((f & vsock::kFeatureSeqpacket) == 0);
    uint8_t cfg[12];
    std::memset(cfg, 0xaa, sizeof cfg);
    d.read_config(0, cfg);
    uint64_t cid;
    std::memcpy(&cid, cfg, 8);
    CHECK(cid == kGuestCid);
    CHECK(cfg[8] == 0);  // past the struct
    uint8_t lo[4];
    d.read_config(0, lo);
    CHECK(lo[0] == 3);
    uint8_t hi[4] = {1, 1, 1, 1};
    d.read_config(4, hi);  // Linux reads le64 as two 32-bit halves
    CHECK(hi[0] == 0);
    uint8_t w[8] = {9, 9, 9, 9, 9, 9, 9, 9};
    d.write_config(0, w);  // read-only: ignored
    d.read_config(0, lo);
    CHECK(lo[0] == 3);
}

TEST_CASE("VirtioVsock: create() validates its options") {
    TempDir dir;
    VirtioVsockOptions o;
    o.uds_path = dir.file("v.sock");
    for (uint64_t bad : {0ull, 1ull, 2ull, 0xffffffffull, 1ull << 32}) {
        o.guest_cid = bad;
        CHECK_FALSE(VirtioVsock::create(o).has_value());
    }
    o.guest_cid = 3;
    o.queue_size = 100;
    CHECK_FALSE(VirtioVsock::create(o).has_value());
    o.queue_size = 256;
    o.max_connections = 0;
    CHECK_FALSE(VirtioVsock::create(o).has_value());
    o.max_connections = 16;
    VirtioVsockOptions longp = o;
    longp.uds_path = "/tmp/" + std::string(92, 'x');  // 97 bytes: fits, but "_4294967295" not
    auto e = VirtioVsock::create(longp);
    REQUIRE_FALSE(e.has_value());
    CHECK(e.error().message.find("too long") != std::string::npos);
    CHECK(VirtioVsock::create(o).has_value());
}

TEST_CASE("VirtioVsock: activation needs three valid queues") {
    Rig rig;
    rig.dev->reset();
    std::vector<QueueConfig> two{rig.rxq.config(), rig.txq.config()};
    CHECK_FALSE(rig.dev->activate(
        ActivateContext{rig.mem, rig.dev->device_features(), two, rig.irq, rig.events}));
    CHECK(rig.events.size() == 0);  // nothing left registered by the failed activation
    QueueConfig off = rig.evq.config();
    off.ready = false;
    CHECK_FALSE(rig.dev->activate(ActivateContext{rig.mem, rig.dev->device_features(),
                                                  {rig.rxq.config(), rig.txq.config(), off},
                                                  rig.irq, rig.events}));
    rig.activate();
    CHECK(rig.events.size() == 1);  // the listener
}

TEST_CASE("VirtioVsock: host CONNECT -> guest REQUEST, RESPONSE -> OK, bytes both ways") {
    VirtioVsockOptions o;
    o.buf_alloc = 128 * 1024;
    Rig rig(o);
    rig.give_rx(8);
    auto [fd, req] = rig.host_connect(1234);
    check_to_guest(req, Op::Request, req.h.src_port, 1234);
    CHECK(req.h.src_port >= VirtioVsock::kHostPortBase);
    CHECK(req.h.len == 0);
    CHECK(req.h.buf_alloc == 128 * 1024);
    CHECK(req.h.fwd_cnt == 0);
    CHECK(rig.irq.queue[vsock::kRxQueue] >= 1);
    uint32_t host_port = req.h.src_port;

    // Nothing is written to the program before the guest accepts.
    CHECK(host_read(fd.get(), SIZE_MAX, 50).empty());
    rig.send(rig.hdr(Op::Response, 1234, host_port));
    CHECK(host_read(fd.get(), 64, 1000) == fmt::format("OK {}\n", host_port));
    CHECK(rig.m(rig.dev->metrics().host_connections_opened) == 1);

    host_write(fd.get(), "hello guest");
    Packet p = rig.expect_packet();
    check_to_guest(p, Op::Rw, host_port, 1234);
    CHECK(p.h.len == 11);
    CHECK(p.text() == "hello guest");
    CHECK(p.h.buf_alloc == 128 * 1024);

    rig.send(rig.hdr(Op::Rw, 1234, host_port, 11), "hello host!");
    CHECK(host_read(fd.get(), 11) == "hello host!");
    CHECK(rig.m(rig.dev->metrics().bytes_to_guest) == 11);
    CHECK(rig.m(rig.dev->metrics().bytes_to_host) == 11);  // the OK line is not guest data

    // The next packet to the guest reports what reached the host (fwd_cnt).
    host_write(fd.get(), "x");
    Packet q = rig.expect_packet();
    CHECK(q.h.fwd_cnt == 11);
    CHECK(rig.dev->connection_count() == 1);
}

TEST_CASE("VirtioVsock: host data is split at the guest's rx buffer size") {
    Rig rig;
    rig.give_rx(8, 1000);
    auto [fd, port] = rig.host_established(77);
    std::string data(2500, 'q');
    for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<char>('a' + i % 26);
    host_write(fd.get(), data);
    std::string got;
    while (got.size() < data.size()) {
        Packet p = rig.expect_packet();
        REQUIRE(p.op() == Op::Rw);
        CHECK(p.h.len <= 1000);
        got += p.text();
    }
    CHECK(got == data);
}

TEST_CASE("VirtioVsock: credit: never more than the guest's free buffer (§5.10.6.3)") {
    Rig rig;
    rig.give_rx(16);
    rig.guest_buf_alloc = 10;
    auto [fd, port] = rig.host_established(1234);
    host_write(fd.get(), std::string(25, 'z'));
    Packet p = rig.expect_packet();
    CHECK(p.h.len == 10);
    rig.expect_no_packet();  // no credit left: the device stops
    // The socket is not watched for input while the guest has no credit (no busy loop).
    CHECK(rig.events.settle() == 0);

    rig.guest_fwd_cnt = 4;  // guest consumed 4 bytes: 4 more may come
    rig.send(rig.hdr(Op::CreditUpdate, 1234, port));
    Packet q = rig.expect_packet();
    CHECK(q.h.len == 4);
    rig.expect_no_packet();

    rig.guest_buf_alloc = 100;  // a bigger buffer, announced on any packet
    rig.send(rig.hdr(Op::CreditUpdate, 1234, port));
    Packet r = rig.expect_packet();
    CHECK(r.h.len == 11);
    CHECK(p.text() + q.text() + r.text() == std::string(25, 'z'));

    // A guest whose fwd_cnt runs ahead of what it was sent gets no credit at all.
    rig.guest_fwd_cnt = 1000;
    rig.send(rig.hdr(Op::CreditUpdate, 1234, port));
    host_write(fd.get(), "more");
    rig.expect_no_packet();
}

TEST_CASE("VirtioVsock: CREDIT_REQUEST gets a CREDIT_UPDATE with our buffer state") {
    Rig rig;
    rig.give_rx(4);
    auto [fd, port] = rig.host_established(9);
    rig.send(rig.hdr(Op::Rw, 9, port, 3), "abc");
    CHECK(host_read(fd.get(), 3) == "abc");
    rig.send(rig.hdr(Op::CreditRequest, 9, port));
    Packet p = rig.expect_packet();
    check_to_guest(p, Op::CreditUpdate, port, 9);
    CHECK(p.h.fwd_cnt == 3);
    CHECK(p.h.buf_alloc == 256 * 1024);
    CHECK(rig.m(rig.dev->metrics().credit_updates_sent) == 1);
}

TEST_CASE("VirtioVsock: a slow host: guest data buffered up to buf_alloc, credit update later") {
    VirtioVsockOptions o;
    o.buf_alloc = 1024 * 1024;  // more than a unix socket buffer holds
    Rig rig(o);
    rig.give_rx(32);
    auto [fd, port] = rig.host_established(5);
    std::string chunk(32 * 1024, 0);
    std::string all;
    for (int i = 0; i < 32; ++i) {  // exactly buf_alloc
        for (size_t j = 0; j < chunk.size(); ++j) chunk[j] = static_cast<char>((i * 7 + j) & 0xff);
        rig.send(rig.hdr(Op::Rw, 5, port, static_cast<uint32_t>(chunk.size())), chunk);
        all += chunk;
    }
    // The socket did not take it all: nothing dropped, the connection is alive, and one more
    // byte would exceed the credit we granted.
    CHECK(rig.m(rig.dev->metrics().credit_violation) == 0);
    CHECK(rig.m(rig.dev->metrics().bytes_to_host) < all.size());

    // The host reads; the device flushes on EPOLLOUT and tells the guest its new fwd_cnt.
    std::string got;
    for (int i = 0; i < 2000 && got.size() < all.size(); ++i) {
        got += host_read(fd.get(), all.size() - got.size(), 10);
        rig.events.dispatch(0);
    }
    CHECK(got.size() == all.size());
    CHECK(got == all);
    CHECK(rig.m(rig.dev->metrics().bytes_to_host) == all.size());
    // The guest was told enough of the freed space not to stall: its view of our free
    // buffer is back above the update threshold (or it knows everything we forwarded).
    rig.events.settle();
    uint32_t max_fwd = 0;
    int updates = 0;
    while (auto p = rig.recv()) {
        if (p->op() == Op::CreditUpdate) ++updates;
        max_fwd = std::max(max_fwd, p->h.fwd_cnt);
    }
    CHECK(updates >= 1);
    CHECK(o.buf_alloc - (all.size() - max_fwd) >= VirtioVsock::kCreditUpdateThreshold);
}

TEST_CASE("VirtioVsock: RW beyond the granted credit resets the connection") {
    VirtioVsockOptions o;
    o.buf_alloc = 16;
    Rig rig(o);
    rig.give_rx(4);
    auto [fd, port] = rig.host_established(5);
    rig.send(rig.hdr(Op::Rw, 5, port, 17), std::string(17, 'x'));
    CHECK(rig.m(rig.dev->metrics().credit_violation) == 1);
    Packet p = rig.expect_packet();
    check_to_guest(p, Op::Rst, port, 5);
    CHECK(host_sees_eof(fd.get()));
    CHECK(rig.dev->connection_count() == 0);
}

TEST_CASE("VirtioVsock: guest REQUEST connects to <path>_<port>, or gets RST") {
    Rig rig;
    rig.give_rx(8);
    HostService svc(rig.path + "_5000");
    rig.send(rig.hdr(Op::Request, 40000, 5000));
    Packet p = rig.expect_packet();
    check_to_guest(p, Op::Response, 5000, 40000);
    CHECK(p.h.buf_alloc == 256 * 1024);
    UniqueFd host = svc.accept();
    CHECK(rig.m(rig.dev->metrics().guest_connections_opened) == 1);

    rig.send(rig.hdr(Op::Rw, 40000, 5000, 4), "ping");
    CHECK(host_read(host.get(), 4) == "ping");
    host_write(host.get(), "pong");
    Packet d = rig.expect_packet();
    check_to_guest(d, Op::Rw, 5000, 40000);
    CHECK(d.text() == "pong");

    // No listener on 5001: RST, counted as refused.
    rig.send(rig.hdr(Op::Request, 40001, 5001));
    Packet r = rig.expect_packet();
    check_to_guest(r, Op::Rst, 5001, 40001);
    CHECK(rig.m(rig.dev->metrics().connections_refused) == 1);
    CHECK(rig.dev->connection_count() == 1);
}

TEST_CASE("VirtioVsock: guest RST to a host CONNECT closes the program's connection") {
    Rig rig;
    rig.give_rx(4);
    auto [fd, req] = rig.host_connect(4444);
    rig.send(rig.hdr(Op::Rst, 4444, req.h.src_port));
    CHECK(host_sees_eof(fd.get()));  // EOF without an "OK" line first
    CHECK(rig.m(rig.dev->metrics().connections_refused) == 1);
    CHECK(rig.dev->connection_count() == 0);
    rig.expect_no_packet();  // an RST is never answered
}

TEST_CASE("VirtioVsock: guest RST on an open connection closes the unix side") {
    Rig rig;
    rig.give_rx(4);
    auto [fd, port] = rig.host_established(1);
    rig.send(rig.hdr(Op::Rst, 1, port));
    CHECK(host_sees_eof(fd.get()));
    CHECK(rig.m(rig.dev->metrics().connections_reset) == 1);
    CHECK(rig.dev->connection_count() == 0);
    rig.expect_no_packet();
}

TEST_CASE("VirtioVsock: guest SHUTDOWN: SEND half-closes, both closes and answers RST") {
    Rig rig;
    rig.give_rx(8);
    auto [fd, port] = rig.host_established(2);
    rig.send(rig.hdr(Op::Rw, 2, port, 3), "bye");
    rig.send(rig.hdr(Op::Shutdown, 2, port), {});  // flags 0: nothing changes
    Header sh = rig.hdr(Op::Shutdown, 2, port);
    sh.flags = vsock::kShutdownSend;
    rig.send(sh);
    CHECK(host_read(fd.get(), 3) == "bye");
    CHECK(host_sees_eof(fd.get()));  // the program sees EOF ...
    host_write(fd.get(), "still there");  // ... but can still answer
    Packet p = rig.expect_packet();
    CHECK(p.text() == "still there");

    sh.flags = vsock::kShutdownBoth;
    rig.send(sh);
    Packet r = rig.expect_packet();
    check_to_guest(r, Op::Rst, port, 2);
    CHECK(rig.dev->connection_count() == 0);
    char c = 0;
    ssize_t n = ::send(fd.get(), &c, 1, MSG_NOSIGNAL);
    CHECK(n < 0);  // the device's end is closed
}

TEST_CASE("VirtioVsock: host closes: data first, then RST; half-close sends SHUTDOWN") {
    Rig rig;
    rig.give_rx(8);
    {
        auto [fd, port] = rig.host_established(3);
        host_write(fd.get(), "last words");
        fd.reset();
        Packet d = rig.expect_packet();
        CHECK(d.text() == "last words");
        Packet r = rig.expect_packet();
        check_to_guest(r, Op::Rst, port, 3);
        CHECK(rig.dev->connection_count() == 0);
    }
    {
        auto [fd, port] = rig.host_established(4);
        ::shutdown(fd.get(), SHUT_WR);
        Packet s = rig.expect_packet();
        check_to_guest(s, Op::Shutdown, port, 4);
        CHECK(s.h.flags == vsock::kShutdownSend);
        rig.send(rig.hdr(Op::Rw, 4, port, 5), "reply");
        CHECK(host_read(fd.get(), 5) == "reply");
        CHECK(rig.dev->connection_count() == 1);
        // The program goes away entirely: the guest gets RST.
        fd.reset();
        Packet r = rig.expect_packet();
        check_to_guest(r, Op::Rst, port, 4);
        CHECK(rig.dev->connection_count() == 0);
    }
    // A program that gives up while waiting for the guest's answer.
    {
        auto [fd, req] = rig.host_connect(6);
        fd.reset();
        Packet r = rig.expect_packet();
        check_to_guest(r, Op::Rst, req.h.src_port, 6);
        CHECK(rig.dev->connection_count() == 0);
    }
    rig.events.settle();
    CHECK(rig.events.size() == 1);  // only the listener left
}

TEST_CASE("VirtioVsock: no rx buffers: packets wait, sockets are not read") {
    Rig rig;
    rig.give_rx(2);
    auto [fd, port] = rig.host_established(8);
    // The two buffers: REQUEST used one; fill the other, then run dry.
    host_write(fd.get(), "one");
    CHECK(rig.expect_packet().text() == "one");
    host_write(fd.get(), "two");
    rig.events.settle();
    CHECK(rig.recv().has_value() == false);
    // Starved: the host socket is no longer watched for input, so no spinning.
    CHECK(rig.events.settle() == 0);
    rig.send(rig.hdr(Op::CreditRequest, 8, port));  // a control packet waits too
    rig.give_rx(4);
    Packet a = rig.expect_packet();
    CHECK(a.op() == Op::CreditUpdate);  // control before data
    Packet b = rig.expect_packet();
    CHECK(b.text() == "two");
}

TEST_CASE("VirtioVsock: stale socket file replaced, live one refused") {
    TempDir dir;
    std::string path = dir.file("v.sock");
    {
        // Leave a stale socket file behind.
        int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
        sockaddr_un a{};
        a.sun_family = AF_UNIX;
        std::strcpy(a.sun_path, path.c_str());
        REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
        ::close(fd);
    }
    VirtioVsockOptions o;
    o.guest_cid = 3;
    o.uds_path = path;
    auto first = VirtioVsock::create(o);
    REQUIRE(first.has_value());
    CHECK((*first)->replaced_stale_socket());
    auto second = VirtioVsock::create(o);
    REQUIRE_FALSE(second.has_value());
    CHECK(second.error().message.find("in use") != std::string::npos);
}

TEST_CASE("VirtioVsock: hostile packets are counted and answered, never trusted") {
    Rig rig;
    rig.give_rx(32);
    auto [fd, port] = rig.host_established(10);
    const auto& mt = rig.dev->metrics();

    // Header shorter than 44 bytes.
    rig.send_raw({std::vector<uint8_t>(20, 0)});
    CHECK(rig.m(mt.short_header) == 1);
    // len says 100 but only 4 payload bytes: the stream is broken, connection reset.
    rig.send(rig.hdr(Op::Rw, 10, port, 100), "abcd");
    CHECK(rig.m(mt.bad_len) == 1);
    check_to_guest(rig.expect_packet(), Op::Rst, port, 10);
    CHECK(host_sees_eof(fd.get()));
    // A header claiming more than the 64 KiB cap, for no connection: dropped.
    rig.send(rig.hdr(Op::Rw, 11, 11, 70000), std::string(70000, 'a'));
    CHECK(rig.m(mt.bad_len) == 2);
    // Wrong CIDs: dropped silently.
    Header h = rig.hdr(Op::Request, 1, 2);
    h.dst_cid = 7;
    rig.send(h);
    CHECK(rig.m(mt.wrong_dst_cid) == 1);
    h = rig.hdr(Op::Request, 1, 2);
    h.src_cid = 4;
    rig.send(h);
    CHECK(rig.m(mt.wrong_src_cid) == 1);
    rig.expect_no_packet();
    // Unknown type and unknown op: RST.
    h = rig.hdr(Op::Request, 20, 21);
    h.type = vsock::kTypeSeqpacket;
    rig.send(h);
    check_to_guest(rig.expect_packet(), Op::Rst, 21, 20);
    CHECK(rig.m(mt.bad_type) == 1);
    h = rig.hdr(Op::Rw, 22, 23);
    h.op = 99;
    rig.send(h);
    check_to_guest(rig.expect_packet(), Op::Rst, 23, 22);
    h.op = 0;  // OP_INVALID
    rig.send(h);
    check_to_guest(rig.expect_packet(), Op::Rst, 23, 22);
    CHECK(rig.m(mt.bad_op) == 2);
    // Packets for connections that do not exist: RST (but never for an RST).
    rig.send(rig.hdr(Op::Rw, 30, 31, 2), "hi");
    check_to_guest(rig.expect_packet(), Op::Rst, 31, 30);
    rig.send(rig.hdr(Op::Response, 32, 33));
    check_to_guest(rig.expect_packet(), Op::Rst, 33, 32);
    rig.send(rig.hdr(Op::Rst, 34, 35));
    rig.expect_no_packet();
    CHECK(rig.m(mt.unknown_connection) == 2);
    // A malformed chain (next index out of range) is returned with length 0.
    GuestAddress buf = rig.txq.alloc(64);
    rig.txq.add_raw_chain(0, std::array{virtq::Desc{buf.raw, 64, virtq::kDescFNext, 999}});
    rig.txq.kick();
    rig.dev->queue_notify(vsock::kTxQueue);
    auto u = rig.txq.next_used();
    REQUIRE(u.has_value());
    CHECK(u->second == 0);
    CHECK(rig.m(mt.malformed_chains) == 1);
    // A too-small rx buffer is returned with length 0.
    rig.rxq.add_chain({}, {20});
    rig.rxq.kick();
    rig.send(rig.hdr(Op::Rw, 36, 37, 1), "x");  // wants an RST sent
    (void)rig.expect_packet();
    CHECK_FALSE(rig.dev->needs_reset());
    CHECK(rig.dev->connection_count() == 0);
}

TEST_CASE("VirtioVsock: rx buffers too small for a header are returned empty") {
    Rig rig;
    rig.rxq.add_chain({}, {20});
    rig.rxq.add_chain({}, {44, 100});
    rig.rxq.kick();
    rig.dev->queue_notify(vsock::kRxQueue);
    rig.send(rig.hdr(Op::Rw, 1, 2, 1), "x");  // unknown connection -> RST
    auto first = rig.recv();
    REQUIRE(first.has_value());
    CHECK(first->used_len == 0);
    auto second = rig.recv();
    REQUIRE(second.has_value());
    CHECK(second->op() == Op::Rst);
    CHECK(rig.m(rig.dev->metrics().rx_buffer_too_small) == 1);
}

TEST_CASE("VirtioVsock: bad CONNECT lines close the program's connection") {
    Rig rig;
    rig.give_rx(4);
    for (std::string bad : std::vector<std::string>{"HELLO\n", "CONNECT x\n", std::string(100, 'C')}) {
        auto fd = connect_unix(rig.path);
        REQUIRE(fd.has_value());
        host_write(fd->get(), bad);
        rig.events.settle();
        CHECK(host_sees_eof(fd->get()));
    }
    CHECK(rig.m(rig.dev->metrics().connections_refused) == 3);
    CHECK(rig.dev->connection_count() == 0);
    rig.expect_no_packet();
    // Bytes after the line are kept for the guest, not eaten with it.
    auto fd = connect_unix(rig.path);
    REQUIRE(fd.has_value());
    host_write(fd->get(), "CONNECT 12\r\nearly");
    Packet req = rig.expect_packet();
    REQUIRE(req.op() == Op::Request);
    CHECK(req.h.dst_port == 12);
    rig.send(rig.hdr(Op::Response, 12, req.h.src_port));
    CHECK(host_read(fd->get(), 3 + std::to_string(req.h.src_port).size() + 1).starts_with("OK "));
    CHECK(rig.expect_packet().text() == "early");
}

TEST_CASE("VirtioVsock: connection cap refuses host and guest connections") {
    VirtioVsockOptions o;
    o.max_connections = 1;
    Rig rig(o);
    rig.give_rx(8);
    auto [fd, port] = rig.host_established(1);
    auto second = connect_unix(rig.path);
    REQUIRE(second.has_value());
    rig.events.settle();
    CHECK(host_sees_eof(second->get()));
    HostService svc(rig.path + "_6000");
    rig.send(rig.hdr(Op::Request, 2, 6000));
    check_to_guest(rig.expect_packet(), Op::Rst, 6000, 2);
    CHECK(rig.m(rig.dev->metrics().connections_refused) == 2);
    CHECK(rig.dev->connection_count() == 1);
}

TEST_CASE("VirtioVsock: many connections are kept apart") {
    Rig rig;
    rig.give_rx(64);
    std::vector<std::pair<UniqueFd, uint32_t>> conns;
    for (uint32_t i = 0; i < 5; ++i) conns.push_back(rig.host_established(100 + i));
    for (uint32_t i = 0; i < 5; ++i)
        rig.send(rig.hdr(Op::Rw, 100 + i, conns[i].second, 1), std::string(1, char('A' + i)));
    for (uint32_t i = 0; i < 5; ++i) CHECK(host_read(conns[i].first.get(), 1) == std::string(1, char('A' + i)));
    for (uint32_t i = 0; i < 5; ++i) host_write(conns[i].first.get(), std::to_string(i));
    std::map<uint32_t, std::string> got;
    for (int i = 0; i < 5; ++i) {
        Packet p = rig.expect_packet();
        got[p.h.dst_port] = p.text();
        CHECK(p.h.src_port == conns[p.h.dst_port - 100].second);
    }
    for (uint32_t i = 0; i < 5; ++i) CHECK(got[100 + i] == std::to_string(i));
}

TEST_CASE("VirtioVsock: reset closes every connection; re-activation works") {
    Rig rig;
    rig.give_rx(8);
    auto [fd, port] = rig.host_established(1);
    auto pending = connect_unix(rig.path);  // never sends its CONNECT line
    REQUIRE(pending.has_value());
    rig.events.settle();
    CHECK(rig.dev->connection_count() == 2);
    rig.dev->reset();
    CHECK(rig.dev->connection_count() == 0);
    CHECK(rig.events.size() == 0);
    CHECK(host_sees_eof(fd.get()));
    CHECK(host_sees_eof(pending->get()));
    rig.dev->queue_notify(vsock::kTxQueue);  // forgotten queues: nothing happens

    MockDriver rx2(rig.mem, GuestAddress(0), kAreaPerQueue, kQueueSize);
    MockDriver tx2(rig.mem, GuestAddress(kAreaPerQueue), kAreaPerQueue, kQueueSize);
    MockDriver ev2(rig.mem, GuestAddress(2 * kAreaPerQueue), kAreaPerQueue, kQueueSize);
    REQUIRE(rig.dev->activate(ActivateContext{rig.mem, rig.dev->device_features(),
                                              {rx2.config(), tx2.config(), ev2.config()},
                                              rig.irq, rig.events}));
    rx2.add_chain({}, {44, 4096});
    rx2.kick();
    rig.dev->queue_notify(vsock::kRxQueue);
    auto again = connect_unix(rig.path);
    REQUIRE(again.has_value());
    host_write(again->get(), "CONNECT 1\n");
    rig.events.settle();
    auto u = rx2.next_used();
    REQUIRE(u.has_value());
    CHECK(u->second == 44);
}

TEST_CASE("VirtioVsock: event queue buffers are kept, untouched") {
    Rig rig;
    rig.evq.add_chain({}, {4});
    rig.evq.kick();
    rig.dev->queue_notify(vsock::kEventQueue);
    CHECK_FALSE(rig.evq.next_used().has_value());
    rig.dev->queue_notify(7);  // no such queue
    CHECK_FALSE(rig.dev->needs_reset());
}

TEST_CASE("VirtioVsock: a broken tx ring sets needs_reset and stops watching sockets") {
    Rig rig;
    rig.give_rx(4);
    auto [fd, port] = rig.host_established(1);
    rig.txq.set_avail_idx(static_cast<uint16_t>(rig.txq.avail_idx() + kQueueSize + 1));
    rig.dev->queue_notify(vsock::kTxQueue);
    CHECK(rig.dev->needs_reset());
    CHECK(rig.m(rig.dev->metrics().queue_errors) == 1);
    CHECK(rig.events.size() == 0);
    host_write(fd.get(), "ignored");
    CHECK(rig.events.dispatch(10) == 0);
    rig.dev->reset();
    CHECK_FALSE(rig.dev->needs_reset());
}
