#include "cni-shim/net/pod_network.hpp"

// <net/if.h> before any header that pulls in <linux/if.h> (linux/libc-compat.h).
#include <net/if.h>
#include <net/if_arp.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/if_tun.h>
#include <linux/rtnetlink.h>
#include <sys/ioctl.h>

#include <functional>

#include "cni-shim/net/netlink.hpp"
#include "cni-shim/net/netns.hpp"

namespace kestrel::cninet {

namespace {

constexpr std::string_view kTapPrefix = "tap";
constexpr std::string_view kTapSuffix = "_kestrel";

bool is_our_tap(const nl::Link& l) {
    std::string_view n = l.name;
    return l.kind == "tun" && n.starts_with(kTapPrefix) && n.ends_with(kTapSuffix);
}

// What becomes a guest interface: Ethernet links other than loopback and tun/tap devices
// (ours, or anyone's: a tap has no peer for the guest to reach).
bool is_pod_interface(const nl::Link& l) {
    return (l.flags & IFF_LOOPBACK) == 0 && l.arptype == ARPHRD_ETHER && l.kind != "tun";
}

// Undo steps run in reverse order unless the whole attach succeeded.
class Undo {
public:
    Undo() = default;
    Undo(const Undo&) = delete;
    Undo& operator=(const Undo&) = delete;
    ~Undo() {
        if (committed_) return;
        for (auto it = steps_.rbegin(); it != steps_.rend(); ++it) (*it)();
    }
    void add(std::function<void()> f) { steps_.push_back(std::move(f)); }
    void commit() { committed_ = true; }

private:
    std::vector<std::function<void()>> steps_;
    bool committed_ = false;
};

// A new, non-persistent tap named `name` in the calling thread's namespace (tun binds a
// device to the namespace of the task that opened /dev/net/tun).
Result<UniqueFd> create_tap(const std::string& name) {
    UniqueFd fd(::open("/dev/net/tun", O_RDWR | O_CLOEXEC));
    if (!fd) return fail_errno("'{}': open /dev/net/tun", name);
    ifreq ifr{};
    std::memcpy(ifr.ifr_name, name.data(), name.size());  // < IFNAMSIZ: "tap<N>_kestrel", N < 16
    ifr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
    if (::ioctl(fd.get(), TUNSETIFF, &ifr) < 0) return fail_errno("'{}': TUNSETIFF (creating the tap)", name);
    // TUNSETIFF attaches to an existing tap of that name instead of failing; attach checked
    // that none exists, and the name the kernel reports back must be the one we asked for.
    if (std::string_view(ifr.ifr_name, ::strnlen(ifr.ifr_name, IFNAMSIZ)) != name)
        return fail("'{}': the kernel named the tap '{}'", name, ifr.ifr_name);
    return fd;
}

// The tap only carries the guest's frames: with IPv6 on, the namespace's stack would send
// router solicitations and MLD reports out of it into the guest. The /proc/sys/net files are
// those of the reading thread's namespace.
Result<void> disable_ipv6(const std::string& name) {
    std::string path = "/proc/sys/net/ipv6/conf/" + name + "/disable_ipv6";
    UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CLOEXEC));
    if (!fd) {
        if (errno == ENOENT) return {};  // kernel without IPv6
        return fail_errno("'{}': open {}", name, path);
    }
    if (::write(fd.get(), "1", 1) != 1) return fail_errno("'{}': write {}", name, path);
    return {};
}

bool is_ipv6_link_local(const nl::RouteEntry& r) {
    return r.family == AF_INET6 && r.destination.starts_with("fe80:");
}

Result<PodInterface> describe(nl::Socket& sock, const nl::Link& l) {
    PodInterface p;
    p.name = l.name;
    if (l.hwaddr.size() != 6) return fail("'{}': Ethernet address of {} bytes", l.name, l.hwaddr.size());
    std::copy(l.hwaddr.begin(), l.hwaddr.end(), p.mac.begin());
    if ((p.mac[0] & 1) != 0 || p.mac == std::array<uint8_t, 6>{})
        return fail("'{}': MAC {} is not a unicast address", l.name, p.mac_string());
    // 68: the IPv4 minimum (RFC 791); 65535: the largest an IP packet can fill.
    if (l.mtu < 68 || l.mtu > 65535) return fail("'{}': MTU {} is out of range", l.name, l.mtu);
    p.mtu = l.mtu;
    for (auto& a : CNINET_TRY(sock.addresses(l)))
        if (a.scope == RT_SCOPE_UNIVERSE) p.addresses.push_back({a.family, std::move(a.address), a.prefix_len});
    for (auto& r : CNINET_TRY(sock.routes(l)))
        if (!is_ipv6_link_local(r)) p.routes.push_back({r.family, std::move(r.destination), r.prefix_len, std::move(r.gateway)});
    return p;
}

Result<PodNetwork> attach_here(const std::string& netns_path) {
    auto sock = CNINET_TRY(nl::Socket::connect());
    auto links = CNINET_TRY(sock.links());
    std::vector<nl::Link> pod_links;
    for (auto& l : links) {
        if (is_our_tap(l))
            return fail("'{}' already exists in {}: the pod network is attached already (detach it first)", l.name,
                        netns_path);
        if (is_pod_interface(l)) pod_links.push_back(l);
    }
    if (pod_links.empty())
        return fail("network namespace '{}' has no Ethernet interface besides loopback: did the CNI plugins run?",
                    netns_path);
    if (pod_links.size() > kMaxPodInterfaces)
        return fail("network namespace '{}' has {} interfaces, more than the {} a pod VM takes", netns_path,
                    pod_links.size(), kMaxPodInterfaces);

    PodNetwork net;
    net.netns_path = netns_path;
    Undo undo;
    for (size_t i = 0; i < pod_links.size(); ++i) {
        const nl::Link& veth = pod_links[i];
        PodInterface p = CNINET_TRY(describe(sock, veth));
        p.tap_name = fmt::format("{}{}{}", kTapPrefix, i, kTapSuffix);
        const std::string& tap = p.tap_name;

        p.tap_fd = CNINET_TRY(create_tap(tap));
        int tap_index = static_cast<int>(::if_nametoindex(tap.c_str()));
        if (tap_index == 0) return fail_errno("'{}': if_nametoindex after creating it", tap);
        // Deleting the tap takes its qdisc and filter with it; the fd (closed when `net`
        // goes) would end it too, but a failed attach must not wait for that.
        undo.add([&sock, tap, tap_index] { (void)sock.delete_link(tap_index, tap); });
        CNINET_TRY(disable_ipv6(tap));
        CNINET_TRY(sock.set_up(tap_index, tap, p.mtu));

        CNINET_TRY(sock.add_ingress_qdisc(tap_index, tap));
        CNINET_TRY(sock.add_redirect(tap_index, tap, veth.ifindex, veth.name));

        bool had_qdisc = CNINET_TRY(sock.has_ingress_qdisc(veth.ifindex, veth.name));
        if (!had_qdisc) {
            CNINET_TRY(sock.add_ingress_qdisc(veth.ifindex, veth.name));
            undo.add([&sock, veth] { (void)sock.delete_ingress_qdisc(veth.ifindex, veth.name); });
        }
        if (CNINET_TRY(sock.has_our_priority(veth.ifindex, veth.name)))
            return fail("'{}': its ingress qdisc already has a filter at priority {} (left by an earlier attach? "
                        "detach first)", veth.name, nl::kFilterPriority);
        CNINET_TRY(sock.add_redirect(veth.ifindex, veth.name, tap_index, tap));
        undo.add([&sock, veth] { (void)sock.delete_redirect(veth.ifindex, veth.name); });
        net.interfaces.push_back(std::move(p));
    }
    undo.commit();
    return net;
}

Result<void> detach_here() {
    auto sock = CNINET_TRY(nl::Socket::connect());
    auto links = CNINET_TRY(sock.links());
    std::string errors;
    auto note = [&errors](const Result<void>& r) {
        if (!r) errors += (errors.empty() ? "" : "; ") + r.error();
    };
    // The veths' filters first, the taps last (with the tap go its own qdisc and filter), so
    // no veth filter is ever left redirecting into a device that is gone.
    for (const auto& l : links) {
        if (is_our_tap(l) || (l.flags & IFF_LOOPBACK) != 0) continue;
        auto ours = sock.has_our_priority(l.ifindex, l.name);
        if (!ours) {
            note(std::unexpected(ours.error()));
            continue;
        }
        if (!*ours) continue;
        auto removed = sock.delete_redirect(l.ifindex, l.name);
        note(removed);
        if (!removed) continue;
        // Leave an ingress qdisc that still holds someone else's filters.
        auto after = sock.count_ingress_filters(l.ifindex, l.name);
        if (after && *after == 0) note(sock.delete_ingress_qdisc(l.ifindex, l.name));
    }
    for (const auto& l : links)
        if (is_our_tap(l)) note(sock.delete_link(l.ifindex, l.name));
    if (!errors.empty()) return std::unexpected(errors);
    return {};
}

}  // namespace

std::string PodInterface::mac_string() const {
    return fmt::format("{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", mac[0], mac[1], mac[2], mac[3], mac[4], mac[5]);
}

std::string PodInterface::default_gateway(int family) const {
    for (const auto& r : routes)
        if (r.family == family && r.prefix_len == 0 && !r.gateway.empty()) return r.gateway;
    return {};
}

Result<PodNetwork> attach_pod_network(const std::string& netns_path) {
    auto ns = open_netns(netns_path);
    if (!ns) return std::unexpected("attaching the pod network: " + ns.error().message);
    auto r = in_netns(*ns, [&] { return attach_here(netns_path); });
    if (!r) return std::unexpected(fmt::format("attaching the pod network in '{}': {}", netns_path, r.error()));
    return r;
}

Result<void> detach_pod_network(const std::string& netns_path) {
    auto ns = open_netns(netns_path);
    if (!ns) {
        if (ns.error().missing) return {};
        return std::unexpected("detaching the pod network: " + ns.error().message);
    }
    auto r = in_netns(*ns, [] { return detach_here(); });
    if (!r) return std::unexpected(fmt::format("detaching the pod network in '{}': {}", netns_path, r.error()));
    return r;
}

}  // namespace kestrel::cninet
