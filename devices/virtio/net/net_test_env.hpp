// Test-only helpers for the virtio-net tests: a private network namespace with taps made by
// the real `ip` tool, and an AF_PACKET socket on a tap interface to see the frames the device
// writes (the kernel receives them from the tap) and to inject frames the device reads.
// Tests run as root; without a network namespace they FAIL, never skip silently.
#pragma once

#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <poll.h>
#include <sched.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <array>
#include <string>
#include <vector>

#include "vmm/base/error.hpp"
#include "vmm/base/fd.hpp"

namespace kestrel::test {

// The calling thread moves to a fresh network namespace for the object's lifetime; taps
// made in it vanish with it. Child processes (`ip`) inherit the thread's namespace.
class NetnsScope {
public:
    static Result<NetnsScope> enter() {
        UniqueFd orig(::open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC));
        if (!orig) return fail_errno("open /proc/thread-self/ns/net");
        if (::unshare(CLONE_NEWNET) < 0)
            return fail_errno("unshare(CLONE_NEWNET): the virtio-net tests need root and network namespaces");
        NetnsScope s(std::move(orig));
        // No IPv6 on new interfaces: router solicitations and MLD reports would be extra
        // frames on the taps under test.
        write_file("/proc/sys/net/ipv6/conf/default/disable_ipv6", "1");
        write_file("/proc/sys/net/ipv6/conf/all/disable_ipv6", "1");
        return s;
    }
    NetnsScope(NetnsScope&& o) noexcept : orig_(std::move(o.orig_)) {}
    NetnsScope& operator=(NetnsScope&&) = delete;
    ~NetnsScope() {
        if (orig_) (void)::setns(orig_.get(), CLONE_NEWNET);
    }

    // Runs `ip ARGS` in the namespace; Error with the command line if it fails.
    static Result<void> ip(const std::string& args) {
        std::string cmd = "ip " + args + " 2>&1";
        int r = std::system(cmd.c_str());
        if (r != 0) return fail("'{}' failed (status {}): is iproute2 installed?", cmd, r);
        return {};
    }

private:
    explicit NetnsScope(UniqueFd orig) : orig_(std::move(orig)) {}
    static void write_file(const char* path, const char* v) {
        UniqueFd fd(::open(path, O_WRONLY | O_CLOEXEC));
        if (fd) (void)!::write(fd.get(), v, std::strlen(v));
    }
    UniqueFd orig_;
};

// A raw AF_PACKET socket bound to one interface, all protocols.
class PacketSocket {
public:
    static Result<PacketSocket> open(const std::string& ifname) {
        unsigned idx = ::if_nametoindex(ifname.c_str());
        if (idx == 0) return fail_errno("if_nametoindex({})", ifname);
        UniqueFd fd(::socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, htons(ETH_P_ALL)));
        if (!fd) return fail_errno("socket(AF_PACKET)");
        sockaddr_ll sll{};
        sll.sll_family = AF_PACKET;
        sll.sll_protocol = htons(ETH_P_ALL);
        sll.sll_ifindex = static_cast<int>(idx);
        if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&sll), sizeof sll) < 0) return fail_errno("bind AF_PACKET");
        int big = 8 << 20;
        (void)::setsockopt(fd.get(), SOL_SOCKET, SO_RCVBUFFORCE, &big, sizeof big);
        (void)::setsockopt(fd.get(), SOL_SOCKET, SO_SNDBUFFORCE, &big, sizeof big);
        return PacketSocket(std::move(fd), static_cast<int>(idx));
    }

    Result<void> send(const std::vector<uint8_t>& frame) {
        ssize_t n = ::send(fd_.get(), frame.data(), frame.size(), 0);
        if (n != static_cast<ssize_t>(frame.size())) return fail_errno("AF_PACKET send of {} bytes", frame.size());
        return {};
    }

    // Next frame the interface RECEIVED (i.e. one written to the tap fd), skipping frames
    // the host itself sent out; nullopt after timeout_ms without one.
    std::optional<std::vector<uint8_t>> recv_incoming(int timeout_ms) {
        std::vector<uint8_t> buf(1 << 17);
        while (true) {
            pollfd p{fd_.get(), POLLIN, 0};
            if (::poll(&p, 1, timeout_ms) <= 0) return std::nullopt;
            sockaddr_ll from{};
            socklen_t fl = sizeof from;
            ssize_t n = ::recvfrom(fd_.get(), buf.data(), buf.size(), 0, reinterpret_cast<sockaddr*>(&from), &fl);
            if (n < 0) return std::nullopt;
            if (from.sll_pkttype == PACKET_OUTGOING) continue;
            buf.resize(static_cast<size_t>(n));
            return buf;
        }
    }

    int fd() const { return fd_.get(); }

private:
    PacketSocket(UniqueFd fd, int idx) : fd_(std::move(fd)), ifindex_(idx) {}
    UniqueFd fd_;
    int ifindex_;
};

// An Ethernet frame with our test EtherType (0x88b5, IEEE local experimental) and a
// recognisable payload: byte i = seed + i.
inline std::vector<uint8_t> test_frame(size_t len, uint8_t seed) {
    static constexpr uint8_t src[6] = {0x52, 0x54, 0x00, 0, 0, 1};
    std::vector<uint8_t> f(len);
    std::memset(f.data(), 0xff, 6);  // broadcast: every receiver takes it
    std::memcpy(f.data() + 6, src, 6);
    f[12] = 0x88;
    f[13] = 0xb5;
    for (size_t i = 14; i < len; ++i) f[i] = static_cast<uint8_t>(seed + i);
    return f;
}

}  // namespace kestrel::test
