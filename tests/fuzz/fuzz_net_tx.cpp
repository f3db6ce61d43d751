// libFuzzer target for virtio-net transmit headers and the queues around them
// (devices/virtio/net: virtio_net.*, net_datapath.*, net_tx.*, net_rx.*, tap*.*; virtio 1.2
// §5.1.6): the real device on a real tap, activated per input with any negotiated feature
// subset and receive/transmit queues placed anywhere, fed transmit chains whose
// virtio_net_hdr has any flags, gso_type, hdr_len, gso_size, csum_start and csum_offset
// (cut short, exact or followed by the frame, split over descriptors or indirect),
// hostile ring contents, frames arriving on the tap for the receive queue, and control-queue
// commands (§5.1.6.5) around announcements (VIRTIO_NET_F_GUEST_ANNOUNCE).
//
// Back-end: a tap ("kfz0", IFF_VNET_HDR) in a private network namespace the target enters at
// start-up (root needed), administratively up with no addresses and IPv6 off, so the
// kernel takes our frames (and checks their vnet headers itself) but never answers any;
// frames for the receive side are sent into the tap by an AF_PACKET socket that receives
// nothing. Nothing in the device is stubbed. Checks besides the sanitizers: the event loop
// settles, reset leaves no fd registered and clears NEEDS_RESET, and a notification after
// reset touches no guest memory.
//
// Input: u64 feature mask (acked = offered & mask), receive, transmit and control queue
// placement (read_queue_spec), then ops, each one byte: bits 0-2 select, bit 3 first asks the
// guest to announce itself (VirtioNet::announce), bits 4-5 the queue (% 3: 0 receive,
// 1 transmit, 2 control) for ops 2-5:
//   0 memory       raw guest write
//   1 transmit     u8 flags, u8 gso_type, u16 hdr_len, u16 gso_size, u16 csum_start,
//                  u16 csum_offset, u16 num_buffers, u8 header length (% 13), then a
//                  FuzzDriver chain on the transmit queue whose first part is that header
//   2 chain        FuzzDriver chain (receive buffers are its writable parts)
//   3 descriptor   FuzzDriver raw descriptor
//   4 avail        u8: bit 0 raw avail entry, else raw avail idx
//   5 flags        FuzzDriver avail flags / used_event
//   6 notify       u8 queue index (any), then the event loop runs
//   7 frame        u16 length (% 1601), bytes: sent into the tap (receive path)
#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/if_packet.h>
#include <linux/if_tun.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <vector>

#include "devices/virtio/net/net_spec.hpp"
#include "devices/virtio/net/virtio_net.hpp"
#include "tests/fuzz/fuzz_support.hpp"

using namespace kestrel;
using namespace kestrel::fuzz;

namespace {

constexpr const char* kTapName = "kfz0";

void die(const char* what) {
    std::perror(what);
    std::fprintf(stderr, "fuzz-net-tx: set-up failed (needs root, network namespaces and /dev/net/tun)\n");
    std::abort();
}

void write_file(const char* path, const char* v) {
    int fd = ::open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0) return;
    (void)!::write(fd, v, std::strlen(v));
    ::close(fd);
}

struct Backend {
    std::unique_ptr<VirtioNet> dev;
    int packet_fd = -1;
    int ifindex = 0;
};

Backend& backend() {
    static Backend b = [] {
        Backend out;
        if (::unshare(CLONE_NEWNET) < 0) die("unshare(CLONE_NEWNET)");
        // No IPv6 on the tap: router solicitations and MLD reports would be frames the
        // fuzzer did not ask for.
        write_file("/proc/sys/net/ipv6/conf/default/disable_ipv6", "1");
        write_file("/proc/sys/net/ipv6/conf/all/disable_ipv6", "1");
        int tun = ::open("/dev/net/tun", O_RDWR | O_CLOEXEC);
        if (tun < 0) die("open /dev/net/tun");
        ifreq ifr{};
        std::strncpy(ifr.ifr_name, kTapName, IFNAMSIZ - 1);
        ifr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
        if (::ioctl(tun, TUNSETIFF, &ifr) < 0) die("TUNSETIFF");
        int s = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        if (s < 0 || ::ioctl(s, SIOCGIFFLAGS, &ifr) < 0) die("SIOCGIFFLAGS");
        ifr.ifr_flags |= IFF_UP;
        if (::ioctl(s, SIOCSIFFLAGS, &ifr) < 0) die("SIOCSIFFLAGS");
        ::close(s);
        out.ifindex = static_cast<int>(::if_nametoindex(kTapName));
        // Protocol 0: this socket only sends (into the tap); it is never given frames.
        out.packet_fd = ::socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, 0);
        if (out.packet_fd < 0) die("socket(AF_PACKET)");
        auto dev = VirtioNet::create(VirtioNetOptions{.tap_fd = tun,
                                                      .mac = MacAddress{0x52, 0x54, 0, 0x12, 0x34, 0x56},
                                                      .queue_size = 256});
        if (!dev) {
            std::fprintf(stderr, "fuzz-net-tx: %s\n", dev.error().what().c_str());
            std::abort();
        }
        out.dev = std::move(*dev);
        return out;
    }();
    return b;
}

void send_frame(const Backend& b, std::span<const uint8_t> frame) {
    sockaddr_ll to{};
    to.sll_family = AF_PACKET;
    to.sll_ifindex = b.ifindex;
    to.sll_halen = 6;
    (void)::sendto(b.packet_fd, frame.data(), frame.size(), MSG_DONTWAIT,
                   reinterpret_cast<const sockaddr*>(&to), sizeof to);
}


}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
    quiet_logs();
    backend();
    return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    GuestMemory& mem = memory();
    clear_memory(mem);
    Backend& b = backend();
    VirtioNet& dev = *b.dev;
    Input in(data, size);
    uint64_t acked = dev.device_features() & in.u64();
    std::vector<QueueConfig> cfgs;
    std::vector<FuzzDriver> drivers;
    for (unsigned q = 0; q < 3; ++q) {
        QueueSpec s = read_queue_spec(in);
        cfgs.push_back(s.cfg);
        drivers.emplace_back(mem, s.cfg);
    }
    FakeRegistry events;
    CountingInterrupt irq(3);
    bool active = dev.activate(ActivateContext{mem, acked, cfgs, irq, events}).has_value();
    // activate() wakes the event loop to post the first tap reads.
    if (active) events.settle(64, true);

    for (int ops = 0; !in.empty() && ops < 256; ++ops) {
        uint8_t op = in.u8();
        FuzzDriver& d = drivers[((op >> 4) & 3) % 3];
        if (op & 8) (void)dev.announce(1);
        switch (op & 7) {
        case 0: raw_memory_write(mem, in); break;
        case 1: {
            net::NetHdr h{in.u8(), in.u8(), in.u16(), in.u16(), in.u16(), in.u16(), in.u16()};
            size_t len = in.u8() % (net::kHdrBytes + 1);
            auto bytes = std::span(reinterpret_cast<const uint8_t*>(&h), len);
            if (len == 0) drivers[net::kTxQueue].add_chain(in);
            else drivers[net::kTxQueue].add_chain(in, bytes);
            break;
        }
        case 2: d.add_chain(in); break;
        case 3: d.raw_descriptor(in); break;
        case 4:
            if (in.u8() & 1) d.raw_avail(in);
            else d.raw_avail_idx(in);
            break;
        case 5: d.flags(in); break;
        case 6:
            dev.queue_notify(in.u8());
            events.settle(64, true);
            break;
        case 7: {
            std::vector<uint8_t> frame(in.u16() % 1601);
            in.bytes(frame);
            send_frame(b, frame);
            // The device's tap poll completes as task work of this thread: a few rounds
            // with a short wait let it arrive and be delivered.
            for (int i = 0; i < 3; ++i) events.dispatch(1);
            events.settle(64, true);
            break;
        }
        }
    }
    events.settle(64, true);
    dev.reset();
    check(events.size() == 0);
    check(!dev.needs_reset());
    // Frames the guest had no buffers for wait in the tap; the next input starts empty.
    static std::array<uint8_t, 1 << 16> sink;
    while (::read(dev.tap_fd(), sink.data(), sink.size()) > 0) {
    }
    MemorySnapshot before(mem);
    dev.queue_notify(net::kRxQueue);
    dev.queue_notify(net::kTxQueue);
    dev.queue_notify(net::kCtrlQueue);
    check(before.unchanged());
    return 0;
}
