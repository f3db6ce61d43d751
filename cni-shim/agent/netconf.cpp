// rtnetlink requests for the `network` op (see netconf.hpp): one NETLINK_ROUTE socket, a
// RTM_GETLINK dump to find links by MAC, then RTM_NEWLINK / RTM_NEWADDR / RTM_NEWROUTE each
// acknowledged (NLM_F_ACK) before the next. Messages are built and parsed by hand with length
// checks: the agent is static and links no libnl.
#include "cni-shim/agent/netconf.hpp"

#include <arpa/inet.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <net/if_arp.h>
#include <sys/socket.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <vector>

namespace kestrel::agent {
namespace {

constexpr size_t align4(size_t n) { return (n + 3) & ~size_t{3}; }
constexpr size_t kMaxLinks = 1024;          // more than a pod VM has; bounds the dump we keep
constexpr size_t kRecvBuffer = 64 * 1024;   // a dump part is at most a page or two per message

struct Link {
    int index = 0;
    unsigned flags = 0;
    unsigned type = 0;  // ARPHRD_*
    std::string name;
    std::vector<uint8_t> hwaddr;
};

std::string mac_text(const uint8_t* m, size_t n) {
    std::string s;
    char b[4];
    for (size_t i = 0; i < n; ++i) {
        std::snprintf(b, sizeof b, "%s%02x", i ? ":" : "", m[i]);
        s += b;
    }
    return s;
}

std::string prefix_text(const IpPrefix& p, bool with_len = true) {
    char b[INET6_ADDRSTRLEN] = {};
    ::inet_ntop(p.family, p.addr.data(), b, sizeof b);
    return with_len ? std::string(b) + "/" + std::to_string(p.prefix_len) : std::string(b);
}

size_t addr_len(const IpPrefix& p) { return p.family == AF_INET ? 4 : 16; }

// One request: nlmsghdr, the family's header, attributes (rtattr + payload, 4-byte aligned).
class Msg {
public:
    template <class Header>
    Msg(uint16_t type, uint16_t flags, const Header& h) : buf_(sizeof(nlmsghdr)) {
        nlmsghdr n{};
        n.nlmsg_type = type;
        n.nlmsg_flags = static_cast<uint16_t>(NLM_F_REQUEST | flags);
        std::memcpy(buf_.data(), &n, sizeof n);
        append(&h, sizeof h);
    }
    void attr(uint16_t type, const void* data, size_t len) {
        rtattr a{};
        a.rta_type = type;
        a.rta_len = static_cast<uint16_t>(sizeof a + len);
        append(&a, sizeof a);  // 4 bytes: the payload follows at once
        append(data, len);
    }
    void attr_u32(uint16_t type, uint32_t v) { attr(type, &v, sizeof v); }
    const std::vector<uint8_t>& finish(uint32_t seq) {
        nlmsghdr n{};
        std::memcpy(&n, buf_.data(), sizeof n);
        n.nlmsg_len = static_cast<uint32_t>(buf_.size());
        n.nlmsg_seq = seq;
        std::memcpy(buf_.data(), &n, sizeof n);
        return buf_;
    }

private:
    void append(const void* p, size_t n) {
        const size_t at = buf_.size();
        buf_.resize(at + align4(n), 0);
        std::memcpy(buf_.data() + at, p, n);
    }
    std::vector<uint8_t> buf_;
};

class Rtnl {
public:
    static Result<Rtnl> open() {
        UniqueFd fd(::socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE));
        if (!fd) return sys_error("rtnetlink socket");
        sockaddr_nl sa{};
        sa.nl_family = AF_NETLINK;
        if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) return sys_error("rtnetlink bind");
        return Rtnl(std::move(fd));
    }

    // Sends `m` with NLM_F_ACK and waits for its acknowledgement; `what` prefixes errors.
    Result<void> call(Msg& m, const std::string& what) {
        const uint32_t seq = ++seq_;
        if (auto s = send(m.finish(seq)); !s) return error(what + ": " + s.error());
        bool done = false;
        std::string failure;
        auto r = receive(seq, [&](const nlmsghdr& h, const uint8_t* body, size_t len) -> Result<bool> {
            if (h.nlmsg_type != NLMSG_ERROR) return false;
            nlmsgerr e{};
            if (len < sizeof e.error) return error("short NLMSG_ERROR");
            std::memcpy(&e.error, body, sizeof e.error);
            if (e.error != 0) failure = std::strerror(-e.error);
            done = true;
            return true;
        });
        if (!r) return error(what + ": " + r.error());
        if (!done) return error(what + ": no acknowledgement");
        if (!failure.empty()) return error(what + ": " + failure);
        return {};
    }

    Result<std::vector<Link>> links() {
        const uint32_t seq = ++seq_;
        ifinfomsg ifi{};
        ifi.ifi_family = AF_UNSPEC;
        Msg m(RTM_GETLINK, NLM_F_DUMP, ifi);
        if (auto s = send(m.finish(seq)); !s) return error("RTM_GETLINK: " + s.error());
        std::vector<Link> out;
        auto r = receive(seq, [&](const nlmsghdr& h, const uint8_t* body, size_t len) -> Result<bool> {
            if (h.nlmsg_type == NLMSG_DONE) return true;
            if (h.nlmsg_type == NLMSG_ERROR) return error("RTM_GETLINK dump failed");
            if (h.nlmsg_type != RTM_NEWLINK) return false;
            if (len < sizeof(ifinfomsg)) return error("short RTM_NEWLINK");
            if (out.size() >= kMaxLinks) return error("more than " + std::to_string(kMaxLinks) + " links");
            ifinfomsg info{};
            std::memcpy(&info, body, sizeof info);
            Link l{info.ifi_index, info.ifi_flags, info.ifi_type, {}, {}};
            for (size_t off = align4(sizeof info); off + sizeof(rtattr) <= len;) {
                rtattr a{};
                std::memcpy(&a, body + off, sizeof a);
                if (a.rta_len < sizeof a || a.rta_len > len - off) return error("malformed link attribute");
                const uint8_t* p = body + off + sizeof a;
                const size_t plen = a.rta_len - sizeof a;
                if (a.rta_type == IFLA_ADDRESS && plen <= 32) l.hwaddr.assign(p, p + plen);
                else if (a.rta_type == IFLA_IFNAME && plen <= IFNAMSIZ)
                    l.name.assign(reinterpret_cast<const char*>(p), strnlen(reinterpret_cast<const char*>(p), plen));
                off += align4(a.rta_len);
            }
            out.push_back(std::move(l));
            return false;
        });
        if (!r) return std::unexpected(r.error());
        return out;
    }

private:
    explicit Rtnl(UniqueFd fd) : fd_(std::move(fd)) {}

    Result<void> send(const std::vector<uint8_t>& b) {
        sockaddr_nl kernel{};
        kernel.nl_family = AF_NETLINK;
        ssize_t n = ::sendto(fd_.get(), b.data(), b.size(), 0, reinterpret_cast<sockaddr*>(&kernel), sizeof kernel);
        if (n != static_cast<ssize_t>(b.size())) return sys_error("sendto");
        return {};
    }

    // Reads messages of `seq` and hands each (header, payload) to `fn` until it returns true.
    template <class F>
    Result<void> receive(uint32_t seq, F&& fn) {
        std::vector<uint8_t> buf(kRecvBuffer);
        for (;;) {
            ssize_t n = ::recv(fd_.get(), buf.data(), buf.size(), MSG_TRUNC);
            if (n < 0 && errno == EINTR) continue;
            if (n < 0) return sys_error("recv");
            if (n == 0) return error("rtnetlink socket closed");
            if (static_cast<size_t>(n) > buf.size()) return error("a netlink message larger than 64 KiB");
            const size_t total = static_cast<size_t>(n);
            for (size_t off = 0; off + sizeof(nlmsghdr) <= total;) {
                nlmsghdr h{};
                std::memcpy(&h, buf.data() + off, sizeof h);
                if (h.nlmsg_len < sizeof h || h.nlmsg_len > total - off) return error("malformed netlink message");
                if (h.nlmsg_seq == seq) {
                    auto r = fn(h, buf.data() + off + sizeof h, h.nlmsg_len - sizeof h);
                    if (!r) return std::unexpected(r.error());
                    if (*r) return {};
                }
                off += align4(h.nlmsg_len);
            }
        }
    }

    UniqueFd fd_;
    uint32_t seq_ = 0;
};

Result<void> set_up(Rtnl& nl, int index, uint32_t mtu, const std::string& what) {
    ifinfomsg ifi{};
    ifi.ifi_family = AF_UNSPEC;
    ifi.ifi_index = index;
    ifi.ifi_flags = IFF_UP;
    ifi.ifi_change = IFF_UP;
    Msg m(RTM_NEWLINK, NLM_F_ACK, ifi);
    if (mtu) m.attr_u32(IFLA_MTU, mtu);
    return nl.call(m, what + ": setting " + (mtu ? "MTU " + std::to_string(mtu) + " and " : "") + "up");
}

// Renames a link (it must be down: the kernel refuses to rename one that is up).
Result<void> set_name(Rtnl& nl, int index, const std::string& name, const std::string& what) {
    ifinfomsg ifi{};
    ifi.ifi_family = AF_UNSPEC;
    ifi.ifi_index = index;
    ifi.ifi_change = IFF_UP;  // and down
    Msg m(RTM_NEWLINK, NLM_F_ACK, ifi);
    m.attr(IFLA_IFNAME, name.c_str(), name.size() + 1);
    return nl.call(m, what + ": renaming it " + name);
}

Result<void> add_address(Rtnl& nl, int index, const IpPrefix& a, const std::string& what) {
    ifaddrmsg ifa{};
    ifa.ifa_family = static_cast<uint8_t>(a.family);
    ifa.ifa_prefixlen = a.prefix_len;
    ifa.ifa_scope = RT_SCOPE_UNIVERSE;
    ifa.ifa_index = static_cast<uint32_t>(index);
    Msg m(RTM_NEWADDR, NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE, ifa);
    m.attr(IFA_LOCAL, a.addr.data(), addr_len(a));
    m.attr(IFA_ADDRESS, a.addr.data(), addr_len(a));
    // The address is the pod's, already checked by the node's CNI plugins: no duplicate
    // address detection, so it is usable at once instead of "tentative" for a second.
    if (a.family == AF_INET6) m.attr_u32(IFA_FLAGS, IFA_F_NODAD);
    return nl.call(m, what + ": address " + prefix_text(a));
}

Result<void> add_route(Rtnl& nl, int index, const NetRoute& r, const std::string& what) {
    rtmsg rt{};
    rt.rtm_family = static_cast<uint8_t>(r.dst.family);
    rt.rtm_dst_len = r.dst.prefix_len;
    rt.rtm_table = RT_TABLE_MAIN;
    rt.rtm_protocol = RTPROT_BOOT;
    // As iproute2 does: IPv4 routes without a gateway are link-scoped; IPv6 routes are universe.
    rt.rtm_scope = (r.dst.family == AF_INET && !r.via) ? RT_SCOPE_LINK : RT_SCOPE_UNIVERSE;
    rt.rtm_type = RTN_UNICAST;
    Msg m(RTM_NEWROUTE, NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE, rt);
    if (r.dst.prefix_len) m.attr(RTA_DST, r.dst.addr.data(), addr_len(r.dst));
    if (r.via) m.attr(RTA_GATEWAY, r.via->addr.data(), addr_len(*r.via));
    m.attr_u32(RTA_OIF, static_cast<uint32_t>(index));
    return nl.call(m, what + ": route " + prefix_text(r.dst) + (r.via ? " via " + prefix_text(*r.via, false) : ""));
}

}  // namespace

Result<void> apply_network(const Network& n) {
    auto nl = Rtnl::open();
    if (!nl) return std::unexpected(nl.error());
    auto links = nl->links();
    if (!links) return std::unexpected(links.error());
    for (const auto& l : *links)
        if (l.flags & IFF_LOOPBACK)
            if (auto r = set_up(*nl, l.index, 0, "lo"); !r) return r;
    // Each interface's guest link, found by MAC.
    std::vector<Link*> found;
    auto what_of = [&](size_t i) {
        const NetInterface& itf = n.interfaces[i];
        return "interfaces[" + std::to_string(i) + "] (" + (itf.name.empty() ? "" : itf.name + ", ") +
               mac_text(itf.mac.data(), itf.mac.size()) + ")";
    };
    for (size_t i = 0; i < n.interfaces.size(); ++i) {
        const NetInterface& itf = n.interfaces[i];
        auto l = std::find_if(links->begin(), links->end(), [&](const Link& k) {
            return k.type == ARPHRD_ETHER && !(k.flags & IFF_LOOPBACK) && k.hwaddr.size() == 6 &&
                   std::equal(k.hwaddr.begin(), k.hwaddr.end(), itf.mac.begin());
        });
        if (l == links->end()) {
            std::string seen;
            for (const auto& k : *links)
                if (k.type == ARPHRD_ETHER) seen += (seen.empty() ? "" : ", ") + k.name + " " + mac_text(k.hwaddr.data(), k.hwaddr.size());
            return error(what_of(i) + ": no guest network interface has this MAC (Ethernet links: " +
                         (seen.empty() ? "none; is virtio_net loaded?" : seen) + ")");
        }
        found.push_back(&*l);
    }
    // The pod's names (eth0, and net1.. as Multus names further networks) in place of the
    // guest kernel's (eth0, eth1 in PCI order): every link to rename first gets a temporary
    // name, so two links can swap names.
    for (int pass = 0; pass < 2; ++pass)
        for (size_t i = 0; i < n.interfaces.size(); ++i) {
            const std::string& want = n.interfaces[i].name;
            if (want.empty() || want == found[i]->name) continue;
            const std::string name = pass == 0 ? "kestrel-tmp" + std::to_string(i) : want;
            if (auto r = set_name(*nl, found[i]->index, name, what_of(i) + " = guest " + found[i]->name); !r) return r;
            if (pass == 1) log("network: " + what_of(i) + ": guest " + found[i]->name + " renamed " + want);
            if (pass == 1) found[i]->name = want;
        }
    for (size_t i = 0; i < n.interfaces.size(); ++i) {
        const NetInterface& itf = n.interfaces[i];
        const Link* l = found[i];
        const std::string what = what_of(i) + " = guest " + l->name;
        if (auto r = set_up(*nl, l->index, itf.mtu, what); !r) return r;
        for (const auto& a : itf.addresses)
            if (auto r = add_address(*nl, l->index, a, what); !r) return r;
        // On-link routes first: a gateway must be reachable when a route through it is added.
        std::vector<NetRoute> routes = itf.routes;
        std::stable_partition(routes.begin(), routes.end(), [](const NetRoute& r) { return !r.via; });
        for (const auto& r : routes)
            if (auto res = add_route(*nl, l->index, r, what); !res) return res;
        log("network: " + what + ": MTU " + std::to_string(itf.mtu) + ", " + std::to_string(itf.addresses.size()) +
            " addresses, " + std::to_string(routes.size()) + " routes");
    }
    return {};
}

}  // namespace kestrel::agent
