// attach/detach_pod_network on namespaces set up by the real CNI bridge + host-local
// plugins, with the test acting as the guest on the returned tap fds. Needs root: without
// it the tests FAIL with the reason.
#include "cni-shim/net/pod_network.hpp"
#include "cni-shim/net/guest_config.hpp"

#include <doctest/doctest.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <thread>

#include "cni-shim/net/cni_test_env.hpp"
#include "cni-shim/net/netlink.hpp"
#include "cni-shim/net/netns.hpp"

using namespace kestrel::cninet;
using namespace kestrel::cninet::test;

namespace {

// Names unique to this process so runs in parallel do not collide.
std::string unique(const char* what) { return fmt::format("kt{}-{}", what, ::getpid()); }

#define REQUIRE_OK(expr)                                                   \
    ({                                                                     \
        auto&& r_ = (expr);                                                \
        REQUIRE_MESSAGE(r_.has_value(), (r_ ? std::string() : r_.error())); \
        std::move(r_).value();                                             \
    })

Mac mac_at(const Bytes& f, size_t off) {
    Mac m;
    std::copy(f.begin() + static_cast<long>(off), f.begin() + static_cast<long>(off + 6), m.begin());
    return m;
}

constexpr Mac kBroadcast{0xff, 0xff, 0xff, 0xff, 0xff, 0xff};

// The CNI Result's address for `ifname` (first "ips" entry), e.g. "10.88.7.2/24".
std::string cni_address(const nlohmann::json& result) { return result.at("ips").at(0).at("address"); }
std::string cni_sandbox_mac(const nlohmann::json& result, const std::string& netns) {
    for (const auto& i : result.at("interfaces"))
        if (i.value("sandbox", "") == netns) return i.at("mac");
    return {};
}

// The guest's side of ARP: asks for `target_ip` from (mac, ip) and returns the MAC in the
// reply, checking every field of the reply. Frames that are not that reply are skipped.
Mac guest_arp(int fd, const Mac& mac, uint32_t ip, uint32_t target_ip) {
    REQUIRE_OK(write_frame(fd, arp(1, kBroadcast, mac, ip, Mac{}, target_ip)));
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    while (std::chrono::steady_clock::now() < deadline) {
        auto f = read_frame(fd, 500);
        if (!f || f->size() < 42 || get16(*f, 12) != 0x0806 || get16(*f, 20) != 2) continue;
        CHECK(mac_at(*f, 0) == mac);                      // Ethernet destination: us
        CHECK(get16(*f, 14) == 1);                        // Ethernet
        CHECK(get16(*f, 16) == 0x0800);                   // IPv4
        CHECK(get32(*f, 28) == target_ip);                // sender: the one we asked for
        CHECK(mac_at(*f, 32) == mac);                     // target: us
        CHECK(get32(*f, 38) == ip);
        CHECK(mac_at(*f, 22) == mac_at(*f, 6));           // sender MAC = frame source
        return mac_at(*f, 22);
    }
    FAIL("no ARP reply for ", ip_text(target_ip), " on the tap within 5 s");
    return {};
}

// Sends an ICMP echo from the guest to `dst_ip` and checks the reply: addresses, id, seq,
// payload and both checksums.
void guest_ping(int fd, const Mac& mac, uint32_t ip, const Mac& dst_mac, uint32_t dst_ip, uint16_t seq) {
    Bytes payload(56);
    for (size_t i = 0; i < payload.size(); ++i) payload[i] = static_cast<uint8_t>(0xa0 + i);
    REQUIRE_OK(write_frame(fd, icmp_echo(8, dst_mac, mac, ip, dst_ip, 0x4b45, seq, payload)));
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    while (std::chrono::steady_clock::now() < deadline) {
        auto f = read_frame(fd, 500);
        if (!f || f->size() < 42 || get16(*f, 12) != 0x0800 || (*f)[23] != 1 || (*f)[34] != 0) continue;
        size_t ihl = ((*f)[14] & 0xf) * 4u;
        REQUIRE(ihl == 20);
        size_t total = get16(*f, 16);
        REQUIRE(14 + total <= f->size());
        CHECK(inet_checksum(*f, 14, 20) == 0);                  // IPv4 header checksum
        CHECK(inet_checksum(*f, 34, total - 20) == 0);          // ICMP checksum
        CHECK(mac_at(*f, 0) == mac);
        CHECK(mac_at(*f, 6) == dst_mac);
        CHECK(get32(*f, 26) == dst_ip);
        CHECK(get32(*f, 30) == ip);
        CHECK(get16(*f, 38) == 0x4b45);
        CHECK(get16(*f, 40) == seq);
        REQUIRE(total - 28 == payload.size());
        CHECK(Bytes(f->begin() + 42, f->begin() + 42 + static_cast<long>(payload.size())) == payload);
        return;
    }
    FAIL("no ICMP echo reply from ", ip_text(dst_ip), " on the tap within 5 s");
}

// A raw ICMP socket in `ns` (a socket keeps the namespace it was made in).
UniqueFd raw_icmp_socket_in(const std::string& ns_path) {
    auto ns = open_netns(ns_path);
    REQUIRE_MESSAGE(ns.has_value(), (ns ? std::string() : ns.error().message));
    auto fd = in_netns(*ns, []() -> Result<UniqueFd> {
        UniqueFd s(::socket(AF_INET, SOCK_RAW | SOCK_CLOEXEC, IPPROTO_ICMP));
        if (!s) return fail_errno("socket(AF_INET, SOCK_RAW, IPPROTO_ICMP)");
        return s;
    });
    return REQUIRE_OK(std::move(fd));
}

// The node pings the pod IP; the test answers as the guest on the tap (ARP, then the echo)
// and checks that the node's socket gets the reply.
void node_pings_guest(const std::string& node_path, int tap_fd, const Mac& mac, uint32_t ip) {
    UniqueFd s = raw_icmp_socket_in(node_path);
    Bytes req(8 + 32);
    req[0] = 8;
    put16(req, 4, 0x6b73);
    put16(req, 6, 7);
    for (size_t i = 8; i < req.size(); ++i) req[i] = static_cast<uint8_t>(i);
    put16(req, 2, inet_checksum(req, 0, req.size()));
    sockaddr_in to{};
    to.sin_family = AF_INET;
    to.sin_addr.s_addr = htonl(ip);
    REQUIRE(::sendto(s.get(), req.data(), req.size(), 0, reinterpret_cast<sockaddr*>(&to), sizeof to) ==
            static_cast<ssize_t>(req.size()));

    bool answered = false;
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    while (!answered && std::chrono::steady_clock::now() < deadline) {
        auto f = read_frame(tap_fd, 500);
        if (!f || f->size() < 42) continue;
        if (get16(*f, 12) == 0x0806 && get16(*f, 20) == 1 && get32(*f, 38) == ip) {
            // ARP request for the guest's IP: it came through the bridge, the veth and the tap.
            REQUIRE_OK(write_frame(tap_fd, arp(2, mac_at(*f, 22), mac, ip, mac_at(*f, 22), get32(*f, 28))));
        } else if (get16(*f, 12) == 0x0800 && (*f)[23] == 1 && (*f)[34] == 8 && get32(*f, 30) == ip) {
            size_t total = get16(*f, 16);
            REQUIRE(14 + total <= f->size());
            CHECK(inet_checksum(*f, 14, 20) == 0);
            CHECK(inet_checksum(*f, 34, total - 20) == 0);
            CHECK(get16(*f, 38) == 0x6b73);
            Bytes data(f->begin() + 42, f->begin() + 14 + static_cast<long>(total));
            REQUIRE_OK(write_frame(tap_fd, icmp_echo(0, mac_at(*f, 6), mac, ip, get32(*f, 26), get16(*f, 38),
                                                     get16(*f, 40), data)));
            answered = true;
        }
    }
    REQUIRE_MESSAGE(answered, "the node's echo request never reached the tap");

    pollfd p{s.get(), POLLIN, 0};
    while (::poll(&p, 1, 5000) > 0) {
        Bytes b(2048);
        ssize_t n = ::recv(s.get(), b.data(), b.size(), 0);  // raw IPv4 socket: IP header included
        REQUIRE(n >= 28);
        b.resize(static_cast<size_t>(n));
        size_t ihl = (b[0] & 0xf) * 4u;
        if (b[ihl] != 0 || get16(b, ihl + 4) != 0x6b73) continue;  // not our echo reply
        CHECK(get32(b, 12) == ip);
        CHECK(get16(b, ihl + 6) == 7);
        CHECK(Bytes(b.begin() + static_cast<long>(ihl + 8), b.end()) == Bytes(req.begin() + 8, req.end()));
        return;
    }
    FAIL("the node never received the guest's echo reply");
}

bool contains(const std::string& s, const std::string& what) { return s.find(what) != std::string::npos; }

}  // namespace

TEST_CASE("pod network tests run as root with /dev/net/tun and the CNI plugins") {
    auto ok = check_privileges();
    REQUIRE_MESSAGE(ok.has_value(), (ok ? std::string() : ok.error()));
}

TEST_CASE("attach: a CNI bridge pod namespace becomes a tap the guest can use; detach and CNI DEL leave nothing") {
    REQUIRE_OK(check_privileges());
    TempDir dir;
    REQUIRE(!dir.path().empty());
    auto node = REQUIRE_OK(NamedNetns::create(unique("node")));
    auto pod = REQUIRE_OK(NamedNetns::create(unique("pod")));
    CniNetwork net(node, "kcni0", "10.88.7", true, dir.path());
    auto result = REQUIRE_OK(net.add(unique("ctr"), pod.path(), "eth0"));
    std::string cidr = cni_address(result);
    std::string pod_ip = cidr.substr(0, cidr.find('/'));
    std::string cni_mac = cni_sandbox_mac(result, pod.path());
    REQUIRE(!cni_mac.empty());

    auto pn = REQUIRE_OK(attach_pod_network(pod.path()));
    REQUIRE(pn.interfaces.size() == 1);
    PodInterface& itf = pn.interfaces[0];
    CHECK(itf.name == "eth0");
    CHECK(itf.tap_name == "tap0_kestrel");
    CHECK(itf.mac_string() == cni_mac);
    CHECK(itf.mtu == 1500);
    REQUIRE(itf.addresses.size() == 1);
    CHECK(itf.addresses[0].family == AF_INET);
    CHECK(fmt::format("{}/{}", itf.addresses[0].address, itf.addresses[0].prefix_len) == cidr);
    CHECK(itf.default_gateway(AF_INET) == "10.88.7.1");
    bool subnet_route = false;
    for (const auto& r : itf.routes) subnet_route |= r.destination == "10.88.7.0" && r.prefix_len == 24 && r.gateway.empty();
    CHECK(subnet_route);
    CHECK(REQUIRE_OK(kernel_ip_param(itf)) == fmt::format("ip={}::10.88.7.1:255.255.255.0::eth0:off", pod_ip));
    REQUIRE(itf.tap_fd);
    auto guest = nlohmann::json::parse(guest_network_json(pn));
    MESSAGE("guest network: ", guest.dump());
    CHECK(guest["interfaces"][0]["mac"] == cni_mac);
    CHECK(guest["interfaces"][0]["addresses"][0] == cidr);
    CHECK(guest["interfaces"][0]["routes"].size() == itf.routes.size());

    // The tc objects, as iproute2 reads them back.
    auto veth_filters = pod.exec("tc filter show dev eth0 ingress");
    CHECK_MESSAGE(contains(veth_filters.out, "mirred (Egress Redirect to device tap0_kestrel) stolen"), veth_filters.out);
    CHECK_MESSAGE(contains(veth_filters.out, "pref 19269 u32"), veth_filters.out);
    auto tap_filters = pod.exec("tc filter show dev tap0_kestrel ingress");
    CHECK_MESSAGE(contains(tap_filters.out, "mirred (Egress Redirect to device eth0) stolen"), tap_filters.out);
    auto tap_link = pod.ip("link show tap0_kestrel");
    CHECK_MESSAGE((contains(tap_link.out, "mtu 1500") && contains(tap_link.out, ",UP")), tap_link.out);

    // The guest: ARP for the gateway, ping it, then answer the node's ping.
    Mac mac = itf.mac;
    uint32_t ip = ipv4(pod_ip), gw = ipv4(net.gateway());
    Mac gw_mac = guest_arp(itf.tap_fd.get(), mac, ip, gw);
    auto bridge_link = node.ip("link show kcni0");
    CHECK_MESSAGE(contains(bridge_link.out, fmt::format("link/ether {:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
                                                        gw_mac[0], gw_mac[1], gw_mac[2], gw_mac[3], gw_mac[4], gw_mac[5])),
                  bridge_link.out);
    guest_ping(itf.tap_fd.get(), mac, ip, gw_mac, gw, 1);
    guest_ping(itf.tap_fd.get(), mac, ip, gw_mac, gw, 2);
    node_pings_guest(node.path(), itf.tap_fd.get(), mac, ip);

    REQUIRE_OK(detach_pod_network(pod.path()));
    CHECK_FALSE(contains(pod.ip("link show").out, "kestrel"));
    CHECK_FALSE(contains(pod.exec("tc qdisc show dev eth0").out, "ingress"));
    CHECK(pod.exec("tc filter show dev eth0 ingress").out.empty());
    REQUIRE_OK(detach_pod_network(pod.path()));  // idempotent

    // Attachable again (a pod VM restarted), and the new tap works.
    pn = REQUIRE_OK(attach_pod_network(pod.path()));
    REQUIRE(pn.interfaces.size() == 1);
    guest_ping(pn.interfaces[0].tap_fd.get(), mac, ip, gw_mac, gw, 3);
    REQUIRE_OK(detach_pod_network(pod.path()));
    CHECK_FALSE(contains(pod.ip("link show").out, "kestrel"));
    CHECK_FALSE(contains(pod.exec("tc qdisc show dev eth0").out, "ingress"));

    CHECK(std::filesystem::exists(net.ipam_dir() + "/" + pod_ip));  // host-local's lease, until DEL
    REQUIRE_OK(net.del());
    auto links = pod.ip("-o link show").out;
    CHECK_FALSE(contains(links, "eth0"));
    CHECK_FALSE(contains(node.ip("-o link show").out, "veth"));
    CHECK_FALSE(std::filesystem::exists(net.ipam_dir() + "/" + pod_ip));  // host-local released it
}

TEST_CASE("attach: two CNI networks give two taps; a failure half-way leaves nothing behind") {
    REQUIRE_OK(check_privileges());
    TempDir dir0, dir1;
    auto node = REQUIRE_OK(NamedNetns::create(unique("node2")));
    auto pod = REQUIRE_OK(NamedNetns::create(unique("pod2")));
    CniNetwork net0(node, "kcni0", "10.88.8", true, dir0.path(), 1500, "fd00:88:8:");
    CniNetwork net1(node, "kcni1", "10.88.9", false, dir1.path(), 1400);
    auto r0 = REQUIRE_OK(net0.add(unique("ctr"), pod.path(), "eth0"));
    auto r1 = REQUIRE_OK(net1.add(unique("ctr"), pod.path(), "eth1"));

    // A filter of someone else's at our priority on eth1: attach fails on the second
    // interface and must undo the first.
    REQUIRE_OK(sh_ok(fmt::format("ip netns exec {} tc qdisc add dev eth1 ingress", pod.name())));
    REQUIRE_OK(sh_ok(fmt::format("ip netns exec {} tc filter add dev eth1 parent ffff: prio {} protocol all u32 "
                                 "match u32 0 0 classid 1:1", pod.name(), nl::kFilterPriority)));
    auto failed = attach_pod_network(pod.path());
    REQUIRE_FALSE(failed.has_value());
    CHECK_MESSAGE(contains(failed.error(), "'eth1'"), failed.error());
    CHECK_FALSE(contains(pod.ip("link show").out, "kestrel"));
    CHECK_FALSE(contains(pod.exec("tc qdisc show dev eth0").out, "ingress"));
    auto theirs = pod.exec("tc filter show dev eth1 ingress").out;
    CHECK_MESSAGE(contains(theirs, "flowid 1:1"), theirs);  // untouched
    REQUIRE_OK(sh_ok(fmt::format("ip netns exec {} tc qdisc del dev eth1 ingress", pod.name())));

    auto pn = REQUIRE_OK(attach_pod_network(pod.path()));
    REQUIRE(pn.interfaces.size() == 2);
    const nlohmann::json* results[2] = {&r0, &r1};
    const CniNetwork* nets[2] = {&net0, &net1};
    for (size_t i = 0; i < 2; ++i) {
        PodInterface& itf = pn.interfaces[i];
        INFO("interface ", i);
        CHECK(itf.name == fmt::format("eth{}", i));
        CHECK(itf.tap_name == fmt::format("tap{}_kestrel", i));
        CHECK(itf.mac_string() == cni_sandbox_mac(*results[i], pod.path()));
        unsigned mtu = i == 0 ? 1500 : 1400;
        CHECK(itf.mtu == mtu);
        auto tap_link = pod.ip("link show " + itf.tap_name).out;
        CHECK_MESSAGE(contains(tap_link, fmt::format("mtu {} ", mtu)), tap_link);
        std::string cidr = cni_address(*results[i]);
        REQUIRE(itf.addresses.size() == (i == 0 ? 2 : 1));  // eth0 is dual stack; no fe80:: address
        CHECK(fmt::format("{}/{}", itf.addresses[0].address, itf.addresses[0].prefix_len) == cidr);
        uint32_t ip = ipv4(itf.addresses[0].address), gw = ipv4(nets[i]->gateway());
        Mac gw_mac = guest_arp(itf.tap_fd.get(), itf.mac, ip, gw);
        guest_ping(itf.tap_fd.get(), itf.mac, ip, gw_mac, gw, 9);
    }
    CHECK(pn.interfaces[0].default_gateway(AF_INET) == "10.88.8.1");
    CHECK(pn.interfaces[0].default_gateway(AF_INET6) == "fd00:88:8::1");
    const IpAddress& v6 = pn.interfaces[0].addresses[1];
    CHECK(v6.family == AF_INET6);
    CHECK_MESSAGE((v6.address.starts_with("fd00:88:8::") && v6.prefix_len == 64), v6.address);
    bool v6_subnet = false;
    for (const auto& r : pn.interfaces[0].routes) {
        CHECK_FALSE(r.destination.starts_with("fe80:"));
        v6_subnet |= r.family == AF_INET6 && r.destination == "fd00:88:8::" && r.prefix_len == 64;
    }
    CHECK(v6_subnet);
    CHECK(pn.interfaces[1].default_gateway(AF_INET6).empty());
    CHECK(pn.interfaces[1].default_gateway(AF_INET).empty());

    REQUIRE_OK(detach_pod_network(pod.path()));
    CHECK_FALSE(contains(pod.ip("link show").out, "kestrel"));
    for (const char* dev : {"eth0", "eth1"})
        CHECK_FALSE(contains(pod.exec(fmt::format("tc qdisc show dev {}", dev)).out, "ingress"));
}

TEST_CASE("attach: errors for a missing namespace, a non-namespace file and a namespace with only lo") {
    REQUIRE_OK(check_privileges());
    std::string missing = "/run/netns/" + unique("missing");
    auto r = attach_pod_network(missing);
    REQUIRE_FALSE(r.has_value());
    CHECK_MESSAGE((contains(r.error(), missing) && contains(r.error(), "No such file")), r.error());
    CHECK(detach_pod_network(missing).has_value());  // already gone: nothing to do

    auto not_net = attach_pod_network("/proc/self/ns/uts");
    REQUIRE_FALSE(not_net.has_value());
    CHECK_MESSAGE(contains(not_net.error(), "not a network namespace"), not_net.error());
    auto not_ns = attach_pod_network("/etc/hostname");
    REQUIRE_FALSE(not_ns.has_value());
    CHECK_MESSAGE(contains(not_ns.error(), "not a namespace file"), not_ns.error());

    auto empty = REQUIRE_OK(NamedNetns::create(unique("lo")));
    auto lo_only = attach_pod_network(empty.path());
    REQUIRE_FALSE(lo_only.has_value());
    CHECK_MESSAGE(contains(lo_only.error(), "no Ethernet interface"), lo_only.error());
    CHECK(empty.ip("-o link show").out.find("kestrel") == std::string::npos);
    CHECK(detach_pod_network(empty.path()).has_value());
}

TEST_CASE("kernel_ip_param: netmask from the prefix, gateway from the default route, IPv4 required") {
    PodInterface itf;
    itf.name = "eth0";
    itf.addresses = {{AF_INET6, "fd00::5", 64}, {AF_INET, "192.168.3.17", 20}};
    itf.routes = {{AF_INET, "192.168.0.0", 20, ""}, {AF_INET, "", 0, "192.168.0.1"}};
    CHECK(kernel_ip_param(itf, "eth1").value() == "ip=192.168.3.17::192.168.0.1:255.255.240.0::eth1:off");
    itf.routes.pop_back();
    CHECK(kernel_ip_param(itf).value() == "ip=192.168.3.17:::255.255.240.0::eth0:off");
    itf.addresses.pop_back();
    CHECK_FALSE(kernel_ip_param(itf).has_value());
}

TEST_CASE("guest_network_json: every interface with CIDR addresses, routes with explicit default prefixes") {
    PodNetwork net;
    PodInterface a;
    a.name = "eth0";
    a.mac = {0x0a, 0x58, 0x0a, 0x58, 0x00, 0x05};
    a.mtu = 1500;
    a.addresses = {{AF_INET, "10.88.0.5", 24}, {AF_INET6, "fd00::5", 64}};
    a.routes = {{AF_INET, "", 0, "10.88.0.1"}, {AF_INET, "10.88.0.0", 24, ""}, {AF_INET6, "", 0, "fd00::1"}};
    PodInterface b;
    b.name = "net1";
    b.mac = {0x02, 0, 0, 0, 0, 1};
    b.mtu = 9000;
    net.interfaces.push_back(std::move(a));
    net.interfaces.push_back(std::move(b));
    auto j = nlohmann::json::parse(guest_network_json(net));
    CHECK(j == nlohmann::json::parse(R"({"interfaces": [
        {"name": "eth0", "mac": "0a:58:0a:58:00:05", "mtu": 1500,
         "addresses": ["10.88.0.5/24", "fd00::5/64"],
         "routes": [{"dst": "0.0.0.0/0", "via": "10.88.0.1"}, {"dst": "10.88.0.0/24"},
                    {"dst": "::/0", "via": "fd00::1"}]},
        {"name": "net1", "mac": "02:00:00:00:00:01", "mtu": 9000, "addresses": [], "routes": []}]})"));
}
