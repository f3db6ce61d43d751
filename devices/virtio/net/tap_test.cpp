#include "devices/virtio/net/tap.hpp"
#include "devices/virtio/net/tap_ring.hpp"

#include <doctest/doctest.h>
#include <fcntl.h>
#include <linux/if_tun.h>
#include <sys/ioctl.h>

#include <cstring>

#include "devices/virtio/net/net_spec.hpp"
#include "devices/virtio/net/net_test_env.hpp"

using namespace kestrel;
using kestrel::test::NetnsScope;

namespace {

NetnsScope enter_netns() {
    auto ns = NetnsScope::enter();
    if (!ns) FAIL(ns.error().what());  // never a silent pass without namespaces
    return std::move(*ns);
}

void ip(const std::string& args) {
    auto r = NetnsScope::ip(args);
    REQUIRE_MESSAGE(r.has_value(), (r ? "" : r.error().what()));
}

unsigned tun_flags(int fd) {
    ifreq ifr{};
    REQUIRE(::ioctl(fd, TUNGETIFF, &ifr) == 0);
    return static_cast<unsigned short>(ifr.ifr_flags);
}

}  // namespace

TEST_CASE("Tap::open_by_name: a plain `ip tuntap add` tap, set up for virtio-net") {
    auto ns = enter_netns();
    ip("tuntap add kt0 mode tap");
    auto tap = Tap::open_by_name("kt0");
    REQUIRE_MESSAGE(tap.has_value(), (tap ? "" : tap.error().what()));
    CHECK(tap->name() == "kt0");
    CHECK_FALSE(tap->multi_queue());
    unsigned f = tun_flags(tap->fd());
    CHECK((f & IFF_TAP) != 0);
    CHECK((f & IFF_NO_PI) != 0);
    CHECK((f & IFF_VNET_HDR) != 0);
    int hdr = 0;
    REQUIRE(::ioctl(tap->fd(), TUNGETVNETHDRSZ, &hdr) == 0);
    CHECK(hdr == 12);
    CHECK((::fcntl(tap->fd(), F_GETFL) & O_NONBLOCK) != 0);
    CHECK((::fcntl(tap->fd(), F_GETFD) & FD_CLOEXEC) != 0);

    // One user per single-queue tap: a second attach is refused with a clear reason.
    auto second = Tap::open_by_name("kt0");
    REQUIRE_FALSE(second.has_value());
    CHECK(second.error().message == "tap 'kt0' is busy: another process is attached to it (a tap without "
                                    "multi_queue takes one user)");
    CHECK(second.error().sys_errno == EBUSY);
}

TEST_CASE("TapRing: destroying it lets go of the tap at once (registered fd)") {
    // The ring's teardown after close runs later in a kernel worker; a registered tap fd
    // would keep a single-queue tap attached (busy) until then unless TapRing unregisters it.
    auto ns = enter_netns();
    ip("tuntap add kt3 mode tap");
    for (int i = 0; i < 20; ++i) {
        auto tap = Tap::open_by_name("kt3");
        REQUIRE_MESSAGE(tap.has_value(), "round ", i, ": ", (tap ? "" : tap.error().what()));
        auto ring = TapRing::create(tap->fd(), 4);
        REQUIRE(ring.has_value());
        uint8_t buf[2048];
        REQUIRE(ring->prep_read(buf, sizeof buf, 1));  // empty tap: -EAGAIN at once
        REQUIRE(ring->submit() == 1);
        ring->quiesce(std::chrono::seconds(1));
    }
}

TEST_CASE("Tap::open_by_name: missing, wrong kind, bad names") {
    auto ns = enter_netns();
    auto missing = Tap::open_by_name("nope0");
    REQUIRE_FALSE(missing.has_value());
    CHECK(missing.error().what() == "tap 'nope0' does not exist: create it with ip tuntap add nope0 mode tap");
    // ...and nothing was created behind our back.
    CHECK(::if_nametoindex("nope0") == 0);

    ip("tuntap add kt2 mode tun");
    auto tun = Tap::open_by_name("kt2");
    REQUIRE_FALSE(tun.has_value());
    CHECK(tun.error().message.starts_with("'kt2' is not a tap device"));

    ip("link set lo up");
    auto lo = Tap::open_by_name("lo");
    REQUIRE_FALSE(lo.has_value());
    CHECK(lo.error().message.starts_with("'lo' is not a tap device"));

    CHECK(Tap::open_by_name("").error().message == "tap name is empty");
    CHECK(Tap::open_by_name("a-name-longer-than-15").error().message ==
          "tap name 'a-name-longer-than-15' is longer than 15 bytes");
    CHECK_FALSE(Tap::open_by_name("../x").has_value());
}

TEST_CASE("Tap::open_by_name: a multi_queue tap is attached as one of its queues") {
    auto ns = enter_netns();
    ip("tuntap add kt1 mode tap multi_queue");
    auto a = Tap::open_by_name("kt1");
    REQUIRE_MESSAGE(a.has_value(), (a ? "" : a.error().what()));
    CHECK(a->multi_queue());
    CHECK((tun_flags(a->fd()) & IFF_MULTI_QUEUE) != 0);
    auto b = Tap::open_by_name("kt1");
    REQUIRE(b.has_value());
    CHECK(b->multi_queue());
}

TEST_CASE("Tap::from_fd: takes a caller's attached fd, refuses anything else") {
    auto ns = enter_netns();
    auto attach = [](short flags) {
        int fd = ::open("/dev/net/tun", O_RDWR | O_CLOEXEC);
        REQUIRE(fd >= 0);
        ifreq ifr{};
        std::strcpy(ifr.ifr_name, "kt3");
        ifr.ifr_flags = flags;
        REQUIRE(::ioctl(fd, TUNSETIFF, &ifr) == 0);
        return fd;
    };
    {
        auto t = Tap::from_fd(attach(IFF_TAP | IFF_NO_PI | IFF_VNET_HDR));
        REQUIRE_MESSAGE(t.has_value(), (t ? "" : t.error().what()));
        CHECK(t->name() == "kt3");
        CHECK((::fcntl(t->fd(), F_GETFL) & O_NONBLOCK) != 0);
        int hdr = 0;
        REQUIRE(::ioctl(t->fd(), TUNGETVNETHDRSZ, &hdr) == 0);
        CHECK(hdr == 12);
    }
    auto no_vnet = Tap::from_fd(attach(IFF_TAP | IFF_NO_PI));
    REQUIRE_FALSE(no_vnet.has_value());
    CHECK(no_vnet.error().message.find("without IFF_NO_PI | IFF_VNET_HDR") != std::string::npos);

    CHECK_FALSE(Tap::from_fd(-1).has_value());
    int devnull = ::open("/dev/null", O_RDWR | O_CLOEXEC);
    auto not_tun = Tap::from_fd(devnull);
    REQUIRE_FALSE(not_tun.has_value());
    CHECK(not_tun.error().message.find("not an attached /dev/net/tun") != std::string::npos);
    // from_fd owned the fd and closed it on failure.
    CHECK(::fcntl(devnull, F_GETFD) == -1);
}

TEST_CASE("Tap::offload_flags follows what the driver acked (virtio 1.2 §5.1.3.1)") {
    using namespace kestrel::net;
    CHECK(Tap::offload_flags(0) == 0);
    // TSO without GUEST_CSUM is meaningless: nothing.
    CHECK(Tap::offload_flags(kFeatureGuestTso4 | kFeatureGuestTso6) == 0);
    CHECK(Tap::offload_flags(kFeatureGuestCsum) == TUN_F_CSUM);
    CHECK(Tap::offload_flags(kFeatureGuestCsum | kFeatureGuestTso4) == (TUN_F_CSUM | TUN_F_TSO4));
    CHECK(Tap::offload_flags(kFeatureGuestCsum | kFeatureGuestTso4 | kFeatureGuestTso6 | kFeatureGuestUfo |
                             kFeatureHostTso4 | kFeatureCsum) == (TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6));

    auto ns = enter_netns();
    ip("tuntap add kt4 mode tap");
    auto tap = Tap::open_by_name("kt4");
    REQUIRE(tap.has_value());
    CHECK(tap->set_offload(kFeatureGuestCsum | kFeatureGuestTso4 | kFeatureGuestTso6).has_value());
    CHECK(tap->set_offload(0).has_value());
}
