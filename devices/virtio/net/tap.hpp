// Tap: one file descriptor attached to a host tap interface, set up the way virtio-net needs
// it: frames without packet info (IFF_NO_PI), each preceded by the 12-byte virtio 1.x net
// header (IFF_VNET_HDR + TUNSETVNETHDRSZ, virtio 1.2 §5.1.6), non-blocking.
//
// The tap must already exist (`ip tuntap add NAME mode tap`, made by the administrator or a
// CNI plugin): kestrel never creates interfaces, so it needs no more privilege than the
// tap's owner/group allow and leaves no interface behind.
#pragma once

#include <cstdint>
#include <string>

#include "vmm/base/error.hpp"
#include "vmm/base/fd.hpp"

namespace kestrel {

class Tap {
public:
    static constexpr int kVnetHdrBytes = 12;  // struct virtio_net_hdr_mrg_rxbuf

    // Attaches to the existing tap interface `name` in this thread's network namespace.
    // Taps created with `multi_queue` are attached as one queue of it.
    static Result<Tap> open_by_name(std::string name);
    // Takes ownership of `fd`, a /dev/net/tun fd already attached (TUNSETIFF) by the caller
    // with IFF_TAP | IFF_NO_PI | IFF_VNET_HDR. It is made non-blocking.
    static Result<Tap> from_fd(int fd);
    // What open_by_name checks before attaching: a valid name of an existing interface.
    static Result<void> check_exists(const std::string& name);

    // TUNSETOFFLOAD for what the driver acked: the tap may then hand us frames with partial
    // checksums (TUN_F_CSUM, for VIRTIO_NET_F_GUEST_CSUM) and TCP super-frames (TUN_F_TSO4/6,
    // for GUEST_TSO4/6, which §5.1.3.1 lets a driver take only with GUEST_CSUM). Without
    // them the host kernel checksums and segments before the frame reaches us.
    Result<void> set_offload(uint64_t acked_features);
    // The TUN_F_* flags set_offload() uses for `acked_features`.
    static unsigned offload_flags(uint64_t acked_features);

    int fd() const { return fd_.get(); }
    const std::string& name() const { return name_; }
    bool multi_queue() const { return multi_queue_; }

private:
    Tap(UniqueFd fd, std::string name, bool mq) : fd_(std::move(fd)), name_(std::move(name)), multi_queue_(mq) {}
    static Result<void> finish_setup(int fd, const std::string& name);

    UniqueFd fd_;
    std::string name_;
    bool multi_queue_ = false;
};

}  // namespace kestrel
