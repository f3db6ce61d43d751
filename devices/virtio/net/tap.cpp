#include "devices/virtio/net/tap.hpp"

#include <fcntl.h>
#include <linux/if_tun.h>
#include <net/if.h>
#include <sys/ioctl.h>

#include <cstring>

#include "devices/virtio/net/net_spec.hpp"

namespace kestrel {

namespace {

constexpr short kBaseFlags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;

Result<void> check_name(const std::string& name) {
    if (name.empty()) return fail("tap name is empty");
    if (name.size() >= IFNAMSIZ) return fail("tap name '{}' is longer than {} bytes", name, IFNAMSIZ - 1);
    if (name.find_first_of("/ \t\n:") != std::string::npos || name == "." || name == "..")
        return fail("'{}' is not a valid interface name", name);
    return {};
}

ifreq make_ifreq(const std::string& name, short flags) {
    ifreq ifr{};
    std::memcpy(ifr.ifr_name, name.data(), name.size());  // checked < IFNAMSIZ, rest is 0
    ifr.ifr_flags = flags;
    return ifr;
}

}  // namespace

Result<void> Tap::check_exists(const std::string& name) {
    TRY(check_name(name));
    // The interface must exist before TUNSETIFF: given an unknown name, TUNSETIFF would
    // create a fresh tap that nobody bridged, and it would vanish with our fd. The lookup
    // is in our network namespace (if_nametoindex asks the kernel), unlike /sys/class/net,
    // which shows the namespace of whoever mounted sysfs.
    if (::if_nametoindex(name.c_str()) == 0)
        return fail("tap '{}' does not exist: create it with ip tuntap add {} mode tap", name, name);
    return {};
}

Result<Tap> Tap::open_by_name(std::string name) {
    TRY(check_exists(name));

    UniqueFd fd(::open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC));
    if (!fd) return fail_errno("cannot open /dev/net/tun for tap '{}' (is the tun module loaded?)", name);

    // A tap made with `multi_queue` refuses single-queue attaches and vice versa (EINVAL);
    // so does anything that is not a tap. Try plain first, which is what `ip tuntap add` makes.
    bool mq = false;
    ifreq ifr = make_ifreq(name, kBaseFlags);
    int r = ::ioctl(fd.get(), TUNSETIFF, &ifr);
    if (r < 0 && errno == EINVAL) {
        ifr = make_ifreq(name, kBaseFlags | IFF_MULTI_QUEUE);
        r = ::ioctl(fd.get(), TUNSETIFF, &ifr);
        mq = r == 0;
    }
    if (r < 0) {
        switch (errno) {
        case EINVAL:
            return fail("'{}' is not a tap device (a tun-mode device or another kind of interface): "
                        "create a tap with ip tuntap add {} mode tap", name, name);
        case EBUSY:
            return fail_errno("tap '{}' is busy: another process is attached to it (a tap without "
                              "multi_queue takes one user)", name);
        case EPERM:
            return fail_errno("not allowed to attach to tap '{}': it belongs to another user/group "
                              "(ip tuntap add ... user U group G) or CAP_NET_ADMIN is needed", name);
        default:
            return fail_errno("TUNSETIFF on tap '{}'", name);
        }
    }
    TRY(finish_setup(fd.get(), name));
    return Tap(std::move(fd), std::move(name), mq);
}

Result<Tap> Tap::from_fd(int raw) {
    if (raw < 0) return fail("tap fd {} is not a file descriptor", raw);
    UniqueFd fd(raw);
    ifreq ifr{};
    if (::ioctl(fd.get(), TUNGETIFF, &ifr) < 0)
        return fail_errno("fd {} is not an attached /dev/net/tun descriptor (TUNGETIFF)", raw);
    std::string name(ifr.ifr_name, ::strnlen(ifr.ifr_name, IFNAMSIZ));
    // IFF_VNET_HDR and IFF_NO_PI can only be chosen at TUNSETIFF, which the caller did.
    if ((ifr.ifr_flags & IFF_TAP) == 0) return fail("fd {} is attached to '{}', which is not a tap", raw, name);
    if ((ifr.ifr_flags & IFF_NO_PI) == 0 || (ifr.ifr_flags & IFF_VNET_HDR) == 0)
        return fail("tap fd {} ('{}') was attached without IFF_NO_PI | IFF_VNET_HDR", raw, name);
    int fl = ::fcntl(fd.get(), F_GETFL);
    if (fl < 0 || ::fcntl(fd.get(), F_SETFL, fl | O_NONBLOCK) < 0)
        return fail_errno("cannot make tap fd {} non-blocking", raw);
    TRY(finish_setup(fd.get(), name));
    return Tap(std::move(fd), std::move(name), (ifr.ifr_flags & IFF_MULTI_QUEUE) != 0);
}

Result<void> Tap::finish_setup(int fd, const std::string& name) {
    int sz = kVnetHdrBytes;
    if (::ioctl(fd, TUNSETVNETHDRSZ, &sz) < 0) return fail_errno("TUNSETVNETHDRSZ {} on tap '{}'", sz, name);
    // No offloads until a driver acks them: the tap must hand us plain, checksummed frames.
    if (::ioctl(fd, TUNSETOFFLOAD, 0u) < 0) return fail_errno("TUNSETOFFLOAD 0 on tap '{}'", name);
    return {};
}

unsigned Tap::offload_flags(uint64_t acked) {
    // TSO without CSUM means nothing to the tap (and to §5.1.3.1); UFO is never offered.
    if ((acked & net::kFeatureGuestCsum) == 0) return 0;
    unsigned f = TUN_F_CSUM;
    if (acked & net::kFeatureGuestTso4) f |= TUN_F_TSO4;
    if (acked & net::kFeatureGuestTso6) f |= TUN_F_TSO6;
    if ((acked & net::kFeatureGuestEcn) && (f & (TUN_F_TSO4 | TUN_F_TSO6))) f |= TUN_F_TSO_ECN;
    return f;
}

Result<void> Tap::set_offload(uint64_t acked_features) {
    unsigned f = offload_flags(acked_features);
    if (::ioctl(fd_.get(), TUNSETOFFLOAD, f) < 0) return fail_errno("TUNSETOFFLOAD {:#x} on tap '{}'", f, name_);
    return {};
}

}  // namespace kestrel
