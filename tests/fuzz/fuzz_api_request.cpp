// libFuzzer target for the API's request path (vmm/api/api_request.*, fc_json.*): HTTP method +
// path + body -> ApiRequest, and the JSON objects <-> VmConfig of PUT bodies, --config-file
// and GET /vm/config. Besides the sanitizers (and no exception may escape) it checks:
//  - a refused request is ErrorKind::BadRequest with a message, and fault() makes the
//    {"fault_message", "fault_kind"} object the API answers;
//  - an accepted one has the op its method and path name and a payload that obeys the
//    documented bounds (ids 1-64 of [A-Za-z0-9_-] and equal to the path's, serial <= 20
//    bytes, queues <= 64, tap names 1-15 bytes, unicast MACs that print back as given,
//    CIDs >= 3, no NUL in any string);
//  - round trip: the configuration the accepted requests build (applied as the controller
//    applies them before InstanceStart) goes through full_config_json -> apply_full_config
//    and comes back equal, and so does any --config-file body apply_full_config accepts.
//
// Input: byte 0 % 3 picks the mode, the rest is read as:
//   0 raw       one request: u8 method (% 7: GET PUT PATCH POST DELETE HEAD, or 6: the
//               text up to the first ' ' of what follows), then the path up to the first
//               '\n' and the body after it
//   1 session   requests until the input ends, each u8 endpoint (% kEndpoints, method and
//               path from the table below), u8 id (% kIds, joined to /drives/ and
//               /network-interfaces/), u16 body length, body bytes: JSON-shaped input
//               seeded from real request bodies
//   2 config    the rest is a --config-file body
#include <cstdint>
#include <string>
#include <string_view>

#include "tests/fuzz/fuzz_support.hpp"
#include "vmm/api/api_request.hpp"

using namespace kestrel;
using namespace kestrel::api;
using kestrel::fuzz::check;

namespace {

// Every field the API can set (not `order`, `serial`, `pit`, `debug_exit`: command line only).
bool same_config(const VmConfig& a, const VmConfig& b) {
    return a.kernel == b.kernel && a.initrd == b.initrd && a.cmdline == b.cmdline && a.cpus == b.cpus &&
           a.memory_bytes == b.memory_bytes && a.log_level == b.log_level && a.disks == b.disks &&
           a.nets == b.nets && a.vsock == b.vsock && a.rng == b.rng && a.smt == b.smt &&
           a.track_dirty_pages == b.track_dirty_pages && a.rng_rate_limiter == b.rng_rate_limiter &&
           a.metrics_path == b.metrics_path && a.log_path == b.log_path;
}

// What goes in as a configuration comes back equal through GET /vm/config's JSON.
void check_round_trip(const VmConfig& cfg) {
    const json j = full_config_json(cfg);
    check(!j.dump().empty());  // throws (and so fails) on a string that is not UTF-8
    auto again = apply_full_config(VmConfig{}, j);
    check(again.has_value());
    check(same_config(cfg, *again));
    check(full_config_json(*again) == j);
}

bool no_nul(std::string_view s) { return s.find('\0') == std::string_view::npos; }

std::string lower(std::string s) {
    for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return s;
}

void check_bucket(const std::optional<RateLimiterConfig>& r) {
    if (!r) return;
    for (const auto& b : {r->bandwidth, r->ops})
        if (b) check(b->size <= (1ull << 62) && b->one_time_burst <= (1ull << 62) && b->refill_time_ms <= (1ull << 40));
}

void check_drive(const DiskConfig& d, std::string_view path_id) {
    check(valid_id(d.id) && d.id == path_id);
    check(!d.path.empty() && no_nul(d.path) && no_nul(d.serial) && no_nul(d.partuuid));
    check(d.serial.size() <= 20 && d.queues <= 64);
    check(d.partuuid.empty() || d.is_root);
    check_bucket(d.rate_limiter);
}

void check_net(const NetConfig& n, std::string_view path_id, const json& body) {
    check(valid_id(n.id) && n.id == path_id);
    check(!n.tap.empty() && n.tap.size() <= 15 && no_nul(n.tap) && n.fd == -1);
    if (n.mac) {
        check(((*n.mac)[0] & 1) == 0);  // unicast
        // Exactly the six bytes given: nothing else in the string was taken as an option.
        const auto shown = network_interface_json(n)["guest_mac"].get<std::string>();
        check(shown == lower(body["guest_mac"].get<std::string>()));
    }
    check_bucket(n.rx_rate_limiter);
    check_bucket(n.tx_rate_limiter);
}

// The controller's pre-boot handling of the configuration ops (controller.cpp dispatch), on
// `cfg`; refusals leave it unchanged, as there. A PATCHed limiter replaces the old one whole
// here (the controller merges bucket by bucket): the shapes it builds are the same.
void apply_like_controller(VmConfig& cfg, const ApiRequest& r) {
    VmConfig before = cfg;
    switch (r.op) {
    case Op::PutBootSource: check(apply_boot_source(cfg, std::get<json>(r.payload)).has_value()); break;
    case Op::PutMachineConfig:
    case Op::PatchMachineConfig:
        check(apply_machine_config(cfg, std::get<json>(r.payload), r.op == Op::PatchMachineConfig).has_value());
        break;
    case Op::PutDrive: {
        const auto& d = std::get<DiskConfig>(r.payload);
        for (const auto& o : cfg.disks)
            if (d.is_root && o.is_root && o.id != d.id) return;
        auto it = std::find_if(cfg.disks.begin(), cfg.disks.end(), [&](auto& o) { return o.id == d.id; });
        if (it != cfg.disks.end()) *it = d;
        else cfg.disks.push_back(d);
        break;
    }
    case Op::PatchDrive: {
        const auto& p = std::get<DrivePatch>(r.payload);
        for (auto& d : cfg.disks)
            if (d.id == p.id) {
                if (p.path) d.path = *p.path;
                if (p.rate_limiter) d.rate_limiter = p.rate_limiter;
            }
        break;
    }
    case Op::PutNetwork: {
        const auto& n = std::get<NetConfig>(r.payload);
        for (const auto& o : cfg.nets)
            if (o.id != n.id && (o.tap == n.tap || (n.mac && o.mac == n.mac))) return;
        auto it = std::find_if(cfg.nets.begin(), cfg.nets.end(), [&](auto& o) { return o.id == n.id; });
        if (it != cfg.nets.end()) *it = n;
        else cfg.nets.push_back(n);
        break;
    }
    case Op::PatchNetwork: {
        const auto& p = std::get<NetPatch>(r.payload);
        for (auto& n : cfg.nets)
            if (n.id == p.id) {
                if (p.rx) n.rx_rate_limiter = p.rx;
                if (p.tx) n.tx_rate_limiter = p.tx;
            }
        break;
    }
    case Op::PutVsock: cfg.vsock = std::get<VsockConfig>(r.payload); break;
    case Op::PutEntropy:
        cfg.rng = true;
        cfg.rng_rate_limiter = std::get<std::optional<RateLimiterConfig>>(r.payload);
        break;
    case Op::PutLogger: {
        const auto& l = std::get<LoggerConfig>(r.payload);
        if (l.path) cfg.log_path = *l.path;
        if (l.level) cfg.log_level = *l.level;
        break;
    }
    case Op::PutMetrics: cfg.metrics_path = std::get<std::string>(r.payload); break;
    default: return;
    }
    if (!same_config(before, cfg)) check_round_trip(cfg);
}

// One request through the parser: the invariants of its answer, then its effect on `cfg`.
void one_request(VmConfig& cfg, std::string_view method, std::string_view path, std::string_view body) {
    auto r = parse_api_request(method, path, body);
    if (!r) {
        check(r.error().kind == ErrorKind::BadRequest);
        check(!std::string_view(r.error().what()).empty());
        const auto answer = fault(r.error());
        check(answer.status == 400);
        const json f = json::parse(answer.body, nullptr, false);
        check(f.is_object() && f.size() == 2 && f["fault_message"].is_string() && f["fault_kind"] == "BadRequest");
        return;
    }
    const bool get = method == "GET", put = method == "PUT", patch = method == "PATCH";
    check(get || put || patch);
    auto id_of = [&](std::string_view prefix) { return path.substr(prefix.size()); };
    switch (r->op) {
    case Op::PutDrive: check(put); check_drive(std::get<DiskConfig>(r->payload), id_of("/drives/")); break;
    case Op::PatchDrive: {
        check(patch);
        const auto& p = std::get<DrivePatch>(r->payload);
        check(valid_id(p.id) && p.id == id_of("/drives/") && (p.path || p.rate_limiter));
        check(!p.path || (!p.path->empty() && no_nul(*p.path)));
        check_bucket(p.rate_limiter);
        break;
    }
    case Op::PutNetwork: {
        check(put);
        check_net(std::get<NetConfig>(r->payload), id_of("/network-interfaces/"), json::parse(body));
        break;
    }
    case Op::PatchNetwork: {
        check(patch);
        const auto& p = std::get<NetPatch>(r->payload);
        check(valid_id(p.id) && p.id == id_of("/network-interfaces/"));
        break;
    }
    case Op::PutVsock: {
        check(put && path == "/vsock");
        const auto& v = std::get<VsockConfig>(r->payload);
        check(v.cid >= 3 && v.cid <= 0xfffffffe && !v.socket.empty() && no_nul(v.socket));
        break;
    }
    case Op::PutMetrics: {
        const auto& m = std::get<std::string>(r->payload);
        check(put && !m.empty() && no_nul(m));
        break;
    }
    case Op::PutLogger: {
        const auto& l = std::get<LoggerConfig>(r->payload);
        check(put && (!l.path || (!l.path->empty() && no_nul(*l.path))));
        break;
    }
    case Op::InstanceStart:
    case Op::SendCtrlAltDel:
    case Op::FlushMetrics: check(put && path == "/actions"); break;
    case Op::PauseVm:
    case Op::ResumeVm: check(patch && path == "/vm"); break;
    case Op::GetInstanceInfo:
    case Op::GetVersion:
    case Op::GetMachineConfig:
    case Op::GetVmConfig:
    case Op::GetVmInfo:
    case Op::GetMetrics:
    case Op::GetRamDigest: check(get); break;
    case Op::SaveDeviceState:
    case Op::LoadDeviceState: {
        const auto& file = std::get<std::string>(r->payload);
        check(put && path.starts_with("/vm/device-state/") && !file.empty() && no_nul(file));
        break;
    }
    case Op::SnapshotCreate: {
        const auto& c = std::get<SnapshotCreateRequest>(r->payload);
        check(put && path == "/snapshot/create" && !c.snapshot_path.empty() && !c.mem_file_path.empty() &&
              c.snapshot_path != c.mem_file_path && no_nul(c.snapshot_path) && no_nul(c.mem_file_path));
        break;
    }
    case Op::SnapshotLoad: {
        const auto& l = std::get<SnapshotLoadRequest>(r->payload);
        check(put && path == "/snapshot/load" && !l.snapshot_path.empty() && !l.mem_path.empty() &&
              no_nul(l.snapshot_path) && no_nul(l.mem_path));
        break;
    }
    default: break;
    }
    apply_like_controller(cfg, *r);
}

struct Endpoint {
    const char* method;
    const char* path;  // ends in '/' when an id follows
};
constexpr Endpoint kEndpoints[] = {
    {"PUT", "/boot-source"},          {"PUT", "/machine-config"},  {"PATCH", "/machine-config"},
    {"PUT", "/drives/"},              {"PATCH", "/drives/"},       {"PUT", "/network-interfaces/"},
    {"PATCH", "/network-interfaces/"}, {"PUT", "/vsock"},          {"PUT", "/entropy"}, {"PUT", "/balloon"},
    {"PUT", "/logger"},               {"PUT", "/metrics"},         {"PUT", "/actions"},
    {"PATCH", "/vm"},                 {"PUT", "/snapshot/create"}, {"GET", "/vm/config"},
    {"PUT", "/snapshot/load"},
    {"PUT", "/vm/device-state/save"}, {"PUT", "/vm/device-state/load"},
};
constexpr const char* kIds[] = {"rootfs", "data", "eth0", "eth1", "", "bad.id", "a%20b", "x/y"};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    static const bool quiet = (kestrel::fuzz::quiet_logs(), true);
    (void)quiet;
    if (size < 1) return 0;
    const std::string_view in(reinterpret_cast<const char*>(data) + 1, size - 1);
    VmConfig cfg;
    switch (data[0] % 3) {
    case 0: {
        if (in.empty()) return 0;
        static constexpr const char* kMethods[] = {"GET", "PUT", "PATCH", "POST", "DELETE", "HEAD"};
        std::string_view rest = in.substr(1), method;
        if (uint8_t m = static_cast<uint8_t>(in[0]) % 7; m < 6) {
            method = kMethods[m];
        } else {
            const auto sp = rest.find(' ');
            method = rest.substr(0, sp);
            rest = sp == std::string_view::npos ? std::string_view{} : rest.substr(sp + 1);
        }
        const auto nl = rest.find('\n');
        one_request(cfg, method, rest.substr(0, nl), nl == std::string_view::npos ? "" : rest.substr(nl + 1));
        break;
    }
    case 1: {
        kestrel::fuzz::Input input(data + 1, size - 1);
        while (!input.empty()) {
            const auto& e = kEndpoints[input.u8() % std::size(kEndpoints)];
            std::string path = e.path;
            const char* id = kIds[input.u8() % std::size(kIds)];
            if (path.ends_with('/')) path += id;
            std::string body(std::min<size_t>(input.u16(), input.remaining()), '\0');
            input.bytes({reinterpret_cast<uint8_t*>(body.data()), body.size()});
            one_request(cfg, e.method, path, body);
        }
        break;
    }
    default: {
        const json j = json::parse(in.begin(), in.end(), nullptr, false);
        if (j.is_discarded()) return 0;
        try {
            auto applied = apply_full_config(VmConfig{}, j);
            if (applied) check_round_trip(*applied);
            else check(applied.error().kind == ErrorKind::BadRequest);
        } catch (const std::exception&) {
            check(false);  // main.cpp calls apply_full_config without a try: nothing may escape
        }
        break;
    }
    }
    return 0;
}
