// libFuzzer target for kestrel-agent's wire decoding (cni-shim/agent/request.*): frame
// lengths and JSON payloads -> typed requests. Links agent_request_lib (or recompiles
// agent_request_sources) and nlohmann-json only. Besides the sanitizers (and no exception may
// escape) it checks:
//  - a frame length is accepted exactly when it is 1..1 MiB and equals the big-endian value;
//  - a refused request has a message naming something, and the answer the agent builds from
//    it serializes (replacing bad UTF-8) without throwing;
//  - an accepted request obeys what the executor relies on: ids valid ([A-Za-z0-9_.-]{1,128},
//    not . or ..; exec ids may be ""), args non-empty, strings that reach syscalls without
//    NUL, env entries NAME=VALUE, mount destinations and cwd absolute without . or ..
//    components, signals 1..64, rootfs either a path or a /dev/ device of ext4/erofs (size
//    in whole sectors), kestrel-drive mounts' sources clean /dev/ paths, pod volume names
//    valid ids;
//    `network`: 1..16 interfaces with distinct unicast non-zero MACs, MTU 68..65535, names
//    <= 15 bytes, prefixes within their family's length, route destinations without host
//    bits, gateways of the destination's family.
//
// Input: byte 0 picks the mode, the rest is read as:
//   even  a byte stream as a connection delivers it: frames (u32 BE length + payload) until
//         the input ends or a length is refused (the agent closes the connection there)
//   odd   the rest is one frame's payload
#include <sys/socket.h>

#include <array>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "cni-shim/agent/request.hpp"

using namespace kestrel::agent;

namespace {

void check(bool ok) {
    if (!ok) __builtin_trap();
}

bool no_nul(std::string_view s) { return s.find('\0') == std::string_view::npos; }

bool clean_abs_path(std::string_view p) {
    if (p.empty() || p[0] != '/' || !no_nul(p)) return false;
    size_t start = 0;
    while (start <= p.size()) {
        size_t end = p.find('/', start);
        if (end == std::string_view::npos) end = p.size();
        const auto part = p.substr(start, end - start);
        if (part == "." || part == "..") return false;
        start = end + 1;
    }
    return true;
}

bool exec_ok(const std::string& e) { return e.empty() || valid_id(e); }

void check_process(const Process& p) {
    check(!p.args.empty() && !p.args[0].empty());
    for (const auto& a : p.args) check(no_nul(a));
    for (const auto& e : p.env) check(no_nul(e) && e.find('=') != std::string::npos);
    check(clean_abs_path(p.cwd));
    check(p.uid != UINT32_MAX && p.gid != UINT32_MAX);
    check(!p.umask || *p.umask <= 0777);
    for (const auto& r : p.rlimits) check(r.soft <= r.hard);
}

void check_request(const Request& r) {
    std::visit(
        [&](const auto& b) {
            using T = std::decay_t<decltype(b)>;
            if constexpr (std::is_same_v<T, Ping> || std::is_same_v<T, Shutdown>) {
            } else if constexpr (std::is_same_v<T, Network>) {
                check(!b.interfaces.empty() && b.interfaces.size() <= kMaxNetInterfaces);
                for (size_t i = 0; i < b.interfaces.size(); ++i) {
                    const auto& itf = b.interfaces[i];
                    check(itf.name.size() <= 15 && no_nul(itf.name));
                    check(!(itf.mac[0] & 1) && itf.mac != std::array<uint8_t, 6>{});
                    for (size_t k = 0; k < i; ++k) check(b.interfaces[k].mac != itf.mac);
                    check(itf.mtu >= 68 && itf.mtu <= 65535);
                    check(itf.addresses.size() <= kMaxNetAddresses && itf.routes.size() <= kMaxNetRoutes);
                    auto prefix_ok = [](const IpPrefix& p) {
                        return (p.family == AF_INET && p.prefix_len <= 32) || (p.family == AF_INET6 && p.prefix_len <= 128);
                    };
                    for (const auto& a : itf.addresses) check(prefix_ok(a));
                    for (const auto& route : itf.routes) {
                        check(prefix_ok(route.dst));
                        for (unsigned bit = route.dst.prefix_len; bit < (route.dst.family == AF_INET ? 32u : 128u); ++bit)
                            check(!(route.dst.addr[bit / 8] & (0x80 >> (bit % 8))));
                        if (route.via) check(route.via->family == route.dst.family);
                    }
                }
            } else {
                check(valid_id(b.container));
                if constexpr (std::is_same_v<T, Create>) {
                    check_process(b.spec.process);
                    check(b.spec.hostname.size() <= 64 && no_nul(b.spec.hostname));
                    for (const auto& m : b.spec.mounts) {
                        check(clean_abs_path(m.destination) && no_nul(m.source) && no_nul(m.data));
                        check(!m.type.empty());
                        if (m.copy) {
                            // kestrel-copy: no source (the agent makes it), 1..256 files; one
                            // with path "" is a file, else distinct clean relative paths.
                            check(m.bind && m.type == "bind" && m.source.empty());
                            check(!m.files.empty() && m.files.size() <= 256);
                            for (size_t i = 0; i < m.files.size(); ++i) {
                                const auto& f = m.files[i];
                                check(f.mode <= 07777);
                                if (f.path.empty()) {
                                    check(m.files.size() == 1);
                                    continue;
                                }
                                check(f.path[0] != '/' && clean_abs_path("/" + f.path) && f.path.find("//") == std::string::npos &&
                                      f.path.back() != '/');
                                for (size_t k = 0; k < i; ++k) check(m.files[k].path != f.path);
                            }
                        } else {
                            check(m.files.empty());
                            if (!m.pod_volume.empty()) check(m.bind && m.source.empty() && valid_id(m.pod_volume) && m.pod_volume_mode <= 07777);
                            else if (m.bind) check(m.type == "bind" && !m.source.empty() && m.source[0] == '/');
                            // kestrel-drive: a clean /dev/ path and a size in whole sectors
                            if (m.drive_size != 0)
                                check(m.bind && m.source.starts_with("/dev/") && clean_abs_path(m.source) &&
                                      m.drive_size % 512 == 0 && m.drive_size <= (1ull << 50));
                        }
                    }
                    for (const auto& p : b.spec.masked_paths) check(clean_abs_path(p));
                    for (const auto& p : b.spec.readonly_paths) check(clean_abs_path(p));
                    const auto& root = b.rootfs;
                    if (!root.path.empty()) check(clean_abs_path(root.path) && root.device.empty());
                    else check(root.device.starts_with("/dev/") && clean_abs_path(root.device) &&
                               (root.fstype == "ext4" || root.fstype == "erofs") && root.size % 512 == 0 &&
                               root.size <= (1ull << 50));
                    check(!(b.stdio.terminal && b.stdio.err));
                } else if constexpr (std::is_same_v<T, Exec>) {
                    check(valid_id(b.exec));
                    check_process(b.process);
                } else if constexpr (std::is_same_v<T, Signal>) {
                    check(exec_ok(b.exec) && b.signal >= 1 && b.signal <= 64);
                } else if constexpr (std::is_same_v<T, Delete>) {
                    check(!b.exec || valid_id(*b.exec));
                } else if constexpr (std::is_same_v<T, Pids> || std::is_same_v<T, Stats>) {
                } else {
                    check(exec_ok(b.exec));
                }
            }
        },
        r.body);
}

void one_payload(std::string_view payload) {
    auto r = decode_request(payload);
    if (!r) {
        check(!r.error().message.empty());
        nlohmann::json ans = {{"ok", false}, {"error", r.error().message}};
        if (r.error().id) ans["id"] = *r.error().id;
        check(!ans.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace).empty());
        return;
    }
    check_request(*r);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    if (size < 1) return 0;
    std::string_view in(reinterpret_cast<const char*>(data) + 1, size - 1);
    if (data[0] & 1) {
        one_payload(in);
        return 0;
    }
    while (in.size() >= 4) {
        uint8_t h[4];
        std::memcpy(h, in.data(), 4);
        auto len = frame_length(std::span<const uint8_t, 4>(h));
        const uint32_t raw = (uint32_t{h[0]} << 24) | (uint32_t{h[1]} << 16) | (uint32_t{h[2]} << 8) | h[3];
        check(len.has_value() == (raw >= 1 && raw <= kMaxFrame));
        if (!len) {
            check(!len.error().message.empty());
            return 0;  // the agent closes the connection here
        }
        check(*len == raw);
        if (in.size() - 4 < *len) return 0;  // an incomplete frame waits for more bytes
        one_payload(in.substr(4, *len));
        in.remove_prefix(4 + *len);
    }
    return 0;
}
