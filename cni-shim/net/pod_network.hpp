// Pod networking for kestrel pods: turns the interfaces that the node's CNI plugins put in a
// pod's network namespace into taps that kestrel's virtio-net devices use, the way Kata
// Containers' "tcfilter" mode does.
//
// containerd's CRI plugin creates the pod's network namespace and runs the CNI plugins in it
// (CNI spec, "Parameters": ADD puts an interface named CNI_IFNAME, e.g. a veth `eth0`, with
// its addresses and routes in CNI_NETNS). attach_pod_network() then, inside that namespace,
// for every Ethernet interface but taps it made (loopback and non-Ethernet interfaces such as
// the kernel's fallback tunnels are skipped):
//   - reads its MAC, MTU, addresses and routes;
//   - creates a tap `tap<N>_kestrel` (IFF_TAP | IFF_NO_PI | IFF_VNET_HDR) with the same MTU,
//     IPv6 disabled on it (it must not speak on its own), and brings it up;
//   - adds an ingress qdisc on the interface and on the tap, and on each a u32 match-all
//     filter whose action is `mirred egress redirect` to the other (tc-mirred(8)): frames the
//     bridge sends to the pod leave through the tap to the guest, frames the guest writes
//     leave through the veth. The guest takes the veth's MAC and addresses, so traffic still
//     crosses the veth and the node's filtering on it applies.
// The namespace work runs on a thread of its own (setns moves one thread only).
//
// The taps are not persistent: each lives as long as a file descriptor attached to it, so a
// crashed shim and kestrel leave no tap behind. The fd is O_CLOEXEC; the shim clears that on
// the copy it hands to kestrel (`kestrel run --net fd=N,mac=MAC`). Its virtio-net header is
// the kernel's default 10 bytes until kestrel sets its own size (TUNSETVNETHDRSZ), no
// offloads are enabled, and it is blocking.
//
// What the guest must configure on its side (MAC, MTU, addresses, routes) is in the returned
// PodInterfaces; guest_config.hpp turns it into a kernel parameter or JSON for the agent.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "cni-shim/net/sys.hpp"

namespace kestrel::cninet {

struct IpAddress {
    int family = 0;        // AF_INET or AF_INET6
    std::string address;   // text form: "10.88.0.5", "fd00::5"
    unsigned prefix_len = 0;
};

struct Route {
    int family = 0;
    std::string destination;  // network in text form; empty for the default route
    unsigned prefix_len = 0;
    std::string gateway;      // empty: on-link
};

struct PodInterface {
    std::string name;      // in the pod namespace, e.g. "eth0"
    std::string tap_name;  // e.g. "tap0_kestrel"
    UniqueFd tap_fd;       // attached to the tap, opened in the pod namespace
    std::array<uint8_t, 6> mac{};  // the veth's: the guest's interface must use it
    unsigned mtu = 0;
    // Global addresses (IPv6 link-local ones are left out: the guest derives its own from
    // the same MAC) and the main table's unicast routes through this interface, including
    // the routes the kernel derives from the addresses.
    std::vector<IpAddress> addresses;
    std::vector<Route> routes;

    std::string mac_string() const;  // "aa:bb:cc:dd:ee:ff"
    // The default route's gateway of `family`, or empty.
    std::string default_gateway(int family) const;
};

struct PodNetwork {
    std::string netns_path;
    std::vector<PodInterface> interfaces;  // in ifindex order; the first is the CNI's first
};

// Caps on what a pod namespace may hold (it is untrusted input).
inline constexpr size_t kMaxPodInterfaces = 16;

// Errors name the interface and the step. On failure nothing attach made is left behind.
// A namespace without any Ethernet interface is an error (nothing to give the guest).
Result<PodNetwork> attach_pod_network(const std::string& netns_path);

// Removes what attach made in the namespace: our filters (found by their priority), the
// ingress qdiscs left empty by that, and the `tap<N>_kestrel` taps. It needs nothing from
// attach (the shim may have restarted since), is idempotent, and a namespace that no longer
// exists is success (its taps and qdiscs went with it).
Result<void> detach_pod_network(const std::string& netns_path);

}  // namespace kestrel::cninet
