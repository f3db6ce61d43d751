// libFuzzer target for virtio-vsock packets (devices/virtio/vsock; virtio 1.2 §5.10.6): the
// real device with its host side on real unix sockets, activated per input with its three
// queues placed anywhere, fed guest packets with every op (and unknown ones), any type,
// flags, ports, CIDs, length field and credit values (buf_alloc, fwd_cnt), headers cut short
// or followed by payload, receive buffers of any shape, hostile ring contents — and host
// programs that connect with CONNECT lines (good or not), send, half-close and vanish.
//
// Host side: the device's listener in a private temporary directory (a fresh device per
// input), plus listeners the target owns at "<path>_1024" and "<path>_5000" so guest
// REQUESTs to those ports connect;
// the target accepts them and keeps the host ends until the input ends. The device runs
// with small limits (4 KiB buf_alloc, 4 connections) so credit and connection caps are
// reachable. Nothing in the device is stubbed. Checks besides the sanitizers: the event
// loop settles (a socket the device cannot serve must not stay watched), reset leaves no
// fd registered and no connection open, and a notification after reset touches no guest
// memory.
//
// Input: u64 feature mask (acked = offered & mask), rx, tx and event queue placements
// (read_queue_spec), then ops, each one byte: bits 0-3 select (% 13), bits 4-5 the queue
// (% 3) for ops 3-7:
//   0 memory       raw guest write
//   1 packet       u8 selector (bit 0: src_cid is the guest's, bit 1: dst_cid is the host,
//                  bit 2: dst_port is a listening port, bit 3: its index), u64 src_cid,
//                  u64 dst_cid, u32 src_port, u32 dst_port, u32 len, u16 type, u16 op,
//                  u32 flags, u32 buf_alloc, u32 fwd_cnt, u8 header length (% 45), then a
//                  FuzzDriver chain on the tx queue whose first part is that header
//   2 rx buffers   FuzzDriver chain on the rx queue
//   3 chain        FuzzDriver chain
//   4 descriptor   FuzzDriver raw descriptor
//   5 avail        u8: bit 0 raw avail entry, else raw avail idx
//   6 flags        FuzzDriver avail flags / used_event
//   7 notify       u8 queue index (any)
//   8 connect      u8 length, bytes: a host program connects and writes that CONNECT line
//   9 host write   u8 host end, u16 length (& 0x1fff), bytes
//  10 host close   u8 host end, u8 (bit 0: shutdown(SHUT_WR) only)
//  11 host read    u8 host end: reads what is there
//  12 connect N    u32 port: a host program writes "CONNECT <port>\n"
// Every op ends with the event loop run until it settles and new connections accepted.
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <array>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "devices/virtio/vsock/unix_socket.hpp"
#include "devices/virtio/vsock/virtio_vsock.hpp"
#include "devices/virtio/vsock/vsock_spec.hpp"
#include "tests/fuzz/fuzz_support.hpp"

using namespace kestrel;
using namespace kestrel::fuzz;

namespace {

constexpr uint64_t kGuestCid = 3;
constexpr uint32_t kListenPorts[] = {1024, 5000};

struct HostSide {
    std::string dir;
    std::string path;
    std::vector<UnixListener> listeners;  // <path>_<port>, for guest REQUESTs

    HostSide() {
        char tmpl[] = "/tmp/kfzvsock.XXXXXX";
        check(::mkdtemp(tmpl) != nullptr);
        dir = tmpl;
        path = dir + "/v.sock";
        for (uint32_t port : kListenPorts) {
            auto l = UnixListener::create(path + "_" + std::to_string(port));
            check(l.has_value());
            listeners.push_back(std::move(*l));
        }
    }
    ~HostSide() {
        listeners.clear();
        ::rmdir(dir.c_str());
    }
};

// A fresh device per input: its listener's backlog and host port counter would otherwise
// carry one input's host programs into the next.
std::unique_ptr<VirtioVsock> make_device(const HostSide& h) {
    auto dev = VirtioVsock::create(VirtioVsockOptions{.guest_cid = kGuestCid, .uds_path = h.path,
                                                      .buf_alloc = 4096, .max_connections = 4,
                                                      .queue_size = 256});
    if (!dev) {
        std::fprintf(stderr, "fuzz-vsock-packet: %s\n", dev.error().what().c_str());
        std::abort();
    }
    return std::move(*dev);
}

HostSide& host() {
    static HostSide h;
    return h;
}

// The host programs of one input: their sockets, closed when the input ends.
struct Programs {
    std::vector<UniqueFd> ends;

    void accept_all(const HostSide& h) {
        for (const auto& l : h.listeners)
            for (;;) {
                auto fd = l.accept();
                if (!fd || !fd->valid()) break;
                ends.push_back(std::move(*fd));
            }
    }
    UniqueFd* pick(uint8_t i) { return ends.empty() ? nullptr : &ends[i % ends.size()]; }
    void connect(const HostSide& h, std::string_view line) {
        auto fd = connect_unix(h.path);
        if (!fd) return;  // backlog full: the device has not accepted the earlier ones
        (void)!::write(fd->get(), line.data(), line.size());
        ends.push_back(std::move(*fd));
    }
};


}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
    quiet_logs();
    host();
    return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    GuestMemory& mem = memory();
    clear_memory(mem);
    HostSide& h = host();
    auto device = make_device(h);
    VirtioVsock& dev = *device;
    Input in(data, size);
    uint64_t acked = dev.device_features() & in.u64();
    std::vector<QueueConfig> cfgs;
    std::vector<FuzzDriver> drivers;
    for (unsigned q = 0; q < vsock::kNumQueues; ++q) {
        QueueSpec s = read_queue_spec(in);
        cfgs.push_back(s.cfg);
        drivers.emplace_back(mem, s.cfg);
    }
    FakeRegistry events;
    CountingInterrupt irq(vsock::kNumQueues);
    Programs programs;
    (void)dev.activate(ActivateContext{mem, acked, cfgs, irq, events});

    for (int ops = 0; !in.empty() && ops < 256; ++ops) {
        uint8_t op = in.u8();
        FuzzDriver& d = drivers[((op >> 4) & 3) % vsock::kNumQueues];
        switch ((op & 15) % 13) {
        case 0: raw_memory_write(mem, in); break;
        case 1: {
            uint8_t sel = in.u8();
            vsock::Header hdr{};
            hdr.src_cid = in.u64();
            hdr.dst_cid = in.u64();
            hdr.src_port = in.u32();
            hdr.dst_port = in.u32();
            hdr.len = in.u32();
            hdr.type = in.u16();
            hdr.op = in.u16();
            hdr.flags = in.u32();
            hdr.buf_alloc = in.u32();
            hdr.fwd_cnt = in.u32();
            if (sel & 1) hdr.src_cid = kGuestCid;
            if (sel & 2) hdr.dst_cid = vsock::kHostCid;
            if (sel & 4) hdr.dst_port = kListenPorts[(sel >> 3) & 1];
            size_t len = in.u8() % (vsock::kHeaderBytes + 1);
            auto bytes = std::span(reinterpret_cast<const uint8_t*>(&hdr), len);
            if (len == 0) drivers[vsock::kTxQueue].add_chain(in);
            else drivers[vsock::kTxQueue].add_chain(in, bytes);
            break;
        }
        case 2: drivers[vsock::kRxQueue].add_chain(in); break;
        case 3: d.add_chain(in); break;
        case 4: d.raw_descriptor(in); break;
        case 5:
            if (in.u8() & 1) d.raw_avail(in);
            else d.raw_avail_idx(in);
            break;
        case 6: d.flags(in); break;
        case 7: dev.queue_notify(in.u8()); break;
        case 8: {
            std::string line(in.u8(), '\0');
            in.bytes(std::span(reinterpret_cast<uint8_t*>(line.data()), line.size()));
            programs.connect(h, line);
            break;
        }
        case 9: {
            UniqueFd* fd = programs.pick(in.u8());
            std::vector<uint8_t> bytes(in.u16() & 0x1fff);
            in.bytes(bytes);
            if (fd && fd->valid()) (void)::send(fd->get(), bytes.data(), bytes.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
            break;
        }
        case 10: {
            UniqueFd* fd = programs.pick(in.u8());
            bool half = in.u8() & 1;
            if (fd && fd->valid()) {
                if (half) ::shutdown(fd->get(), SHUT_WR);
                else *fd = UniqueFd();
            }
            break;
        }
        case 11: {
            UniqueFd* fd = programs.pick(in.u8());
            static std::array<uint8_t, 1 << 16> buf;
            if (fd && fd->valid()) (void)::recv(fd->get(), buf.data(), buf.size(), MSG_DONTWAIT);
            break;
        }
        case 12: programs.connect(h, "CONNECT " + std::to_string(in.u32()) + "\n"); break;
        }
        events.settle(256, true);
        programs.accept_all(h);
    }
    // The host programs go away; the device sees the hang-ups before it is reset.
    programs.ends.clear();
    events.settle(256, true);
    dev.reset();
    check(events.size() == 0);
    check(dev.connection_count() == 0);
    check(!dev.needs_reset());
    MemorySnapshot before(mem);
    for (uint16_t q = 0; q < vsock::kNumQueues; ++q) dev.queue_notify(q);
    check(before.unchanged());
    // Connections the device made to our listeners but we did not accept yet go too.
    programs.accept_all(h);
    return 0;
}
