// Test-only helpers for the pod network tests: named network namespaces made with the real
// `ip netns`, the real CNI plugins of Debian's containernetworking-plugins run through the
// CNI protocol, and the frames a guest would send (virtio-net header, ARP, IPv4/ICMP).
// Everything runs as root; a missing privilege or tool is an error the test reports.
#pragma once

#include <arpa/inet.h>
#include <poll.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "cni-shim/net/sys.hpp"

namespace kestrel::cninet::test {

inline constexpr const char* kCniPath = "/usr/lib/cni";

struct Cmd {
    int status = -1;
    std::string out;
};

// `sh -c cmd`, stdout and stderr captured together.
inline Cmd sh(const std::string& cmd) {
    Cmd c;
    FILE* f = ::popen((cmd + " 2>&1").c_str(), "r");
    if (!f) return c;
    char buf[4096];
    size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) c.out.append(buf, n);
    int st = ::pclose(f);
    c.status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    return c;
}

inline Result<void> sh_ok(const std::string& cmd) {
    auto c = sh(cmd);
    if (c.status != 0) return fail("'{}' failed (status {}): {}", cmd, c.status, c.out);
    return {};
}

// Root and /dev/net/tun: the tests need both and say so instead of skipping.
inline Result<void> check_privileges() {
    if (::geteuid() != 0)
        return fail("the pod network tests need root (network namespaces, taps, tc); run them as root");
    if (::access("/dev/net/tun", R_OK | W_OK) != 0) return fail_errno("/dev/net/tun is not usable");
    for (const char* tool : {"/usr/lib/cni/bridge", "/usr/lib/cni/host-local"})
        if (::access(tool, X_OK) != 0)
            return fail_errno("{} is missing: install containernetworking-plugins (tools/setup.sh)", tool);
    if (sh("ip -V").status != 0 || sh("tc -V").status != 0) return fail("ip/tc missing: install iproute2");
    return {};
}

// `ip netns add NAME` for the object's lifetime; the namespace file is /run/netns/NAME.
class NamedNetns {
public:
    static Result<NamedNetns> create(std::string name) {
        CNINET_TRY(sh_ok("ip netns add " + name));
        NamedNetns n(name);
        CNINET_TRY(sh_ok("ip -n " + name + " link set lo up"));
        return n;
    }
    NamedNetns(NamedNetns&& o) noexcept : name_(std::exchange(o.name_, {})) {}
    NamedNetns& operator=(NamedNetns&&) = delete;
    ~NamedNetns() {
        if (!name_.empty()) (void)sh("ip netns del " + name_);
    }
    const std::string& name() const { return name_; }
    std::string path() const { return "/run/netns/" + name_; }
    // `ip -n NAME ARGS` / `ip netns exec NAME CMD`
    Cmd ip(const std::string& args) const { return sh("ip -n " + name_ + " " + args); }
    Cmd exec(const std::string& cmd) const { return sh("ip netns exec " + name_ + " " + cmd); }

private:
    explicit NamedNetns(std::string n) : name_(std::move(n)) {}
    std::string name_;
};

// A temporary directory removed with everything in it.
class TempDir {
public:
    TempDir() {
        char tmpl[] = "/tmp/kestrel-cni-test.XXXXXX";
        if (::mkdtemp(tmpl)) path_ = tmpl;
    }
    ~TempDir() {
        std::error_code ec;
        if (!path_.empty()) std::filesystem::remove_all(path_, ec);
    }
    TempDir(const TempDir&) = delete;
    TempDir& operator=(const TempDir&) = delete;
    const std::string& path() const { return path_; }

private:
    std::string path_;
};

// One CNI network (a conflist of bridge + host-local IPAM) whose plugins run in `node`, a
// namespace standing in for the node's root namespace. Runtime side of the CNI spec v0.4.0:
// "Parameters" (CNI_COMMAND, CNI_CONTAINERID, CNI_NETNS, CNI_IFNAME, CNI_PATH in the
// environment, the configuration on stdin, the Result on stdout) and "Network Configuration
// Lists" (each plugin gets the list's name and cniVersion, and the previous plugin's Result
// as prevResult; DEL runs the plugins in reverse order with the ADD's Result).
class CniNetwork {
public:
    // `subnet_prefix` "10.88.7" gives 10.88.7.0/24 with gateway .1; a non-empty `v6_prefix`
    // "fd00:88:7:" adds fd00:88:7::/64 with gateway ::1 (dual stack).
    CniNetwork(const NamedNetns& node, std::string bridge, std::string subnet_prefix, bool default_route,
               std::string state_dir, unsigned mtu = 1500, std::string v6_prefix = {})
        : node_(node), bridge_(std::move(bridge)), prefix_(std::move(subnet_prefix)), dir_(std::move(state_dir)) {
        nlohmann::json ranges = {{{{"subnet", prefix_ + ".0/24"}, {"gateway", gateway()}}}};
        if (!v6_prefix.empty()) ranges.push_back({{{"subnet", v6_prefix + ":/64"}, {"gateway", v6_prefix + ":1"}}});
        nlohmann::json ipam = {{"type", "host-local"}, {"dataDir", dir_ + "/ipam"}, {"ranges", ranges}};
        if (default_route) {
            ipam["routes"] = {{{"dst", "0.0.0.0/0"}}};
            if (!v6_prefix.empty()) ipam["routes"].push_back({{"dst", "::/0"}});
        }
        conflist_ = {
            {"cniVersion", "0.4.0"},
            {"name", "kestrel-test-" + bridge_},
            {"plugins", {{{"type", "bridge"}, {"bridge", bridge_}, {"isGateway", true}, {"ipMasq", false},
                          {"mtu", mtu}, {"ipam", ipam}}}},
        };
    }
    CniNetwork(const CniNetwork&) = delete;
    CniNetwork& operator=(const CniNetwork&) = delete;
    ~CniNetwork() {
        if (added_) (void)del();
    }

    std::string gateway() const { return prefix_ + ".1"; }
    const std::string& bridge() const { return bridge_; }
    std::string ipam_dir() const { return dir_ + "/ipam/" + conflist_["name"].get<std::string>(); }

    Result<nlohmann::json> add(const std::string& container_id, const std::string& netns, const std::string& ifname) {
        id_ = container_id;
        netns_ = netns;
        ifname_ = ifname;
        nlohmann::json prev;
        for (const auto& plugin : conflist_["plugins"]) {
            prev = CNINET_TRY(invoke("ADD", plugin, prev));
            added_ = true;
        }
        result_ = prev;
        return prev;
    }

    Result<void> del() {
        added_ = false;
        const auto& plugins = conflist_["plugins"];
        for (auto it = plugins.rbegin(); it != plugins.rend(); ++it) CNINET_TRY(invoke("DEL", *it, result_));
        return {};
    }

private:
    Result<nlohmann::json> invoke(const std::string& command, nlohmann::json conf, const nlohmann::json& prev) {
        conf["name"] = conflist_["name"];
        conf["cniVersion"] = conflist_["cniVersion"];
        if (!prev.is_null()) conf["prevResult"] = prev;
        std::string in = dir_ + "/stdin.json", out = dir_ + "/stdout.json";
        std::ofstream(in) << conf.dump();
        std::string type = conf["type"];
        auto c = node_.exec(fmt::format(
            "env -i CNI_COMMAND={} CNI_CONTAINERID={} CNI_NETNS={} CNI_IFNAME={} CNI_PATH={} PATH=/usr/sbin:/usr/bin "
            "{}/{} <{} >{}",
            command, id_, netns_, ifname_, kCniPath, kCniPath, type, in, out));
        std::stringstream text;
        text << std::ifstream(out).rdbuf();
        if (c.status != 0)
            return fail("CNI {} {} ({} in {}) failed (status {}): {} {}", type, command, ifname_, netns_, c.status,
                        text.str(), c.out);
        if (command != "ADD") return nlohmann::json{};
        auto j = nlohmann::json::parse(text.str(), nullptr, false);
        if (j.is_discarded()) return fail("CNI {} ADD printed no JSON: {}", type, text.str());
        return j;
    }

    const NamedNetns& node_;
    std::string bridge_, prefix_, dir_;
    nlohmann::json conflist_, result_;
    std::string id_, netns_, ifname_;
    bool added_ = false;
};

// --- frames, as the guest would write them to the tap (each after a virtio_net_hdr) ---

// struct virtio_net_hdr (virtio 1.2 §5.1.6): the 10 bytes IFF_VNET_HDR puts before each
// frame while the size is the kernel's default; all zero = no checksum/GSO work asked.
inline constexpr size_t kVnetHdr = 10;

using Bytes = std::vector<uint8_t>;
using Mac = std::array<uint8_t, 6>;

inline uint32_t ipv4(const std::string& s) {
    in_addr a{};
    ::inet_pton(AF_INET, s.c_str(), &a);
    return ntohl(a.s_addr);
}

inline std::string ip_text(uint32_t ip) {
    return fmt::format("{}.{}.{}.{}", ip >> 24, (ip >> 16) & 0xff, (ip >> 8) & 0xff, ip & 0xff);
}

inline void put16(Bytes& b, size_t off, uint16_t v) {
    b[off] = static_cast<uint8_t>(v >> 8);
    b[off + 1] = static_cast<uint8_t>(v);
}
inline void put32(Bytes& b, size_t off, uint32_t v) {
    put16(b, off, static_cast<uint16_t>(v >> 16));
    put16(b, off + 2, static_cast<uint16_t>(v));
}
inline uint16_t get16(const Bytes& b, size_t off) { return static_cast<uint16_t>(b[off] << 8 | b[off + 1]); }
inline uint32_t get32(const Bytes& b, size_t off) { return uint32_t{get16(b, off)} << 16 | get16(b, off + 2); }

// RFC 1071 Internet checksum over b[off, off+len); 0 when a received header/message is intact.
inline uint16_t inet_checksum(const Bytes& b, size_t off, size_t len) {
    uint32_t sum = 0;
    for (size_t i = 0; i + 1 < len; i += 2) sum += get16(b, off + i);
    if (len & 1) sum += uint32_t{b[off + len - 1]} << 8;
    while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
    return static_cast<uint16_t>(~sum);
}

inline Bytes eth(const Mac& dst, const Mac& src, uint16_t type, size_t payload) {
    Bytes f(14 + payload);
    std::copy(dst.begin(), dst.end(), f.begin());
    std::copy(src.begin(), src.end(), f.begin() + 6);
    put16(f, 12, type);
    return f;
}

// RFC 826 ARP over Ethernet/IPv4; op 1 request, 2 reply.
inline Bytes arp(uint16_t op, const Mac& eth_dst, const Mac& sha, uint32_t spa, const Mac& tha, uint32_t tpa) {
    Bytes f = eth(eth_dst, sha, 0x0806, 28);
    put16(f, 14, 1);       // htype Ethernet
    put16(f, 16, 0x0800);  // ptype IPv4
    f[18] = 6;
    f[19] = 4;
    put16(f, 20, op);
    std::copy(sha.begin(), sha.end(), f.begin() + 22);
    put32(f, 28, spa);
    std::copy(tha.begin(), tha.end(), f.begin() + 32);
    put32(f, 38, tpa);
    return f;
}

// IPv4 (RFC 791, no options) carrying ICMP (RFC 792) type 8 echo / 0 echo reply.
inline Bytes icmp_echo(uint8_t type, const Mac& dst, const Mac& src, uint32_t sip, uint32_t dip, uint16_t id,
                       uint16_t seq, const Bytes& payload) {
    size_t icmp_len = 8 + payload.size();
    Bytes f = eth(dst, src, 0x0800, 20 + icmp_len);
    f[14] = 0x45;
    put16(f, 16, static_cast<uint16_t>(20 + icmp_len));
    f[22] = 64;  // TTL
    f[23] = 1;   // ICMP
    put32(f, 26, sip);
    put32(f, 30, dip);
    put16(f, 24, inet_checksum(f, 14, 20));
    f[34] = type;
    put16(f, 38, id);
    put16(f, 40, seq);
    std::copy(payload.begin(), payload.end(), f.begin() + 42);
    put16(f, 36, inet_checksum(f, 34, icmp_len));
    return f;
}

inline Result<void> write_frame(int fd, const Bytes& frame) {
    Bytes b(kVnetHdr, 0);
    b.insert(b.end(), frame.begin(), frame.end());
    ssize_t n = ::write(fd, b.data(), b.size());
    if (n != static_cast<ssize_t>(b.size())) return fail_errno("writing a {}-byte frame to the tap", frame.size());
    return {};
}

// The next frame read from the tap (virtio-net header stripped), nullopt on timeout.
inline std::optional<Bytes> read_frame(int fd, int timeout_ms) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, timeout_ms) <= 0) return std::nullopt;
    Bytes b(65536 + kVnetHdr);
    ssize_t n = ::read(fd, b.data(), b.size());
    if (n < static_cast<ssize_t>(kVnetHdr + 14)) return std::nullopt;
    return Bytes(b.begin() + kVnetHdr, b.begin() + n);
}

}  // namespace kestrel::cninet::test
