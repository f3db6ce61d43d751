// The rtnetlink requests cni-shim/net makes, through libnl-route-3: reading a namespace's
// links, addresses and routes, bringing a link up, and the tc objects of the tap <-> veth
// redirection (ingress qdisc, u32 match-all filter with a mirred action). Everything read
// is untrusted (the pod's namespace is set up by CNI plugins, maybe by the pod itself):
// sizes are checked and counts capped before the values leave this file.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "cni-shim/net/sys.hpp"

struct nl_sock;

namespace kestrel::cninet::nl {

// Caps on what a namespace may hold before we refuse it: more than any pod has, few
// enough that a hostile namespace cannot make us build huge tables.
inline constexpr size_t kMaxLinks = 256;
inline constexpr size_t kMaxAddressesPerLink = 64;
inline constexpr size_t kMaxRoutesPerLink = 256;

// Our filters sit at this priority on the ingress qdisc, so detach finds and deletes them
// (and only them) without remembering anything from attach.
inline constexpr uint16_t kFilterPriority = 0x4b45;  // "KE"

struct Link {
    int ifindex = 0;
    std::string name;
    std::string kind;  // rtnl_link_get_type: "veth", "tun", ...; empty when the kernel says none
    unsigned arptype = 0;
    unsigned flags = 0;
    std::vector<uint8_t> hwaddr;  // as reported; Ethernet links have 6 bytes
    unsigned mtu = 0;
};

struct Address {
    int family = 0;  // AF_INET or AF_INET6
    std::string address;
    unsigned prefix_len = 0;
    int scope = 0;  // RT_SCOPE_*
};

struct RouteEntry {
    int family = 0;
    std::string destination;  // empty for a default route
    unsigned prefix_len = 0;
    std::string gateway;      // empty for an on-link route
    int scope = 0;
    int protocol = 0;         // RTPROT_*
};

// A NETLINK_ROUTE socket bound to the namespace of the thread that connected it.
class Socket {
public:
    static Result<Socket> connect();

    Result<std::vector<Link>> links();
    Result<std::vector<Address>> addresses(const Link& l);
    // Unicast routes of the main table with a next hop through `l`.
    Result<std::vector<RouteEntry>> routes(const Link& l);

    Result<void> set_up(int ifindex, const std::string& name, unsigned mtu);
    Result<void> delete_link(int ifindex, const std::string& name);  // gone already: ok

    Result<bool> has_ingress_qdisc(int ifindex, const std::string& name);
    Result<void> add_ingress_qdisc(int ifindex, const std::string& name);
    Result<void> delete_ingress_qdisc(int ifindex, const std::string& name);  // absent: ok
    Result<size_t> count_ingress_filters(int ifindex, const std::string& name);
    // Whether the ingress qdisc holds a filter at kFilterPriority (ours, or in our way: u32
    // adds a second filter to an existing priority instead of refusing it).
    Result<bool> has_our_priority(int ifindex, const std::string& name);
    // u32 match-all at kFilterPriority on `from`'s ingress: mirred egress redirect to `to`.
    Result<void> add_redirect(int from, const std::string& from_name, int to, const std::string& to_name);
    Result<void> delete_redirect(int from, const std::string& from_name);  // absent: ok

private:
    struct Free {
        void operator()(nl_sock* s) const;
    };
    explicit Socket(std::unique_ptr<nl_sock, Free> s) : sk_(std::move(s)) {}
    std::unique_ptr<nl_sock, Free> sk_;
};

}  // namespace kestrel::cninet::nl
