#include "vmm/api/fc_json.hpp"

#include <set>

namespace kestrel::api {

namespace {

// Reads one JSON object strictly: each field once, with its type checked; finish() refuses
// any field nobody asked for.
class Fields {
public:
    static Result<Fields> of(const json& j, std::string_view what) {
        if (!j.is_object()) return bad_request("{}: expected a JSON object", what);
        return Fields(j, what);
    }

    Result<std::optional<std::string>> str(const char* key) {
        auto* v = take(key);
        if (!v || v->is_null()) return std::nullopt;
        if (!v->is_string()) return bad_request("{}: field '{}' must be a string", what_, key);
        auto text = v->get<std::string>();
        // JSON may carry \u0000; a path or name with one would be cut short where kestrel
        // opens it, and be another file than the one GET /vm/config shows.
        if (text.find('\0') != std::string::npos)
            return bad_request("{}: field '{}' contains a NUL character", what_, key);
        return text;
    }
    Result<std::optional<bool>> boolean(const char* key) {
        auto* v = take(key);
        if (!v || v->is_null()) return std::nullopt;
        if (!v->is_boolean()) return bad_request("{}: field '{}' must be true or false", what_, key);
        return v->get<bool>();
    }
    Result<std::optional<uint64_t>> number(const char* key, uint64_t lo, uint64_t hi) {
        auto* v = take(key);
        if (!v || v->is_null()) return std::nullopt;
        if (!v->is_number_integer() || (v->is_number_integer() && !v->is_number_unsigned() && v->get<int64_t>() < 0))
            return bad_request("{}: field '{}' must be a whole number from {} to {}", what_, key, lo, hi);
        uint64_t n = v->get<uint64_t>();
        if (n < lo || n > hi)
            return bad_request("{}: field '{}' is {}, not a whole number from {} to {}", what_, key, n, lo, hi);
        return n;
    }
    const json* object(const char* key) {
        auto* v = take(key);
        return v && !v->is_null() ? v : nullptr;
    }
    template <class T>
    Result<T> required(Result<std::optional<T>> r, const char* key) {
        auto v = TRY(std::move(r));
        if (!v) return bad_request("{}: field '{}' is required", what_, key);
        return *v;
    }
    Result<void> finish() const {
        for (auto it = j_.begin(); it != j_.end(); ++it)
            if (!seen_.count(it.key()))
                return bad_request("{}: unknown field '{}'", what_, it.key());
        return {};
    }

private:
    Fields(const json& j, std::string_view what) : j_(j), what_(what) {}
    const json* take(const char* key) {
        seen_.insert(key);
        auto it = j_.find(key);
        return it == j_.end() ? nullptr : &*it;
    }
    const json& j_;
    std::string what_;
    std::set<std::string, std::less<>> seen_;
};

// Firecracker bounds vcpu_count to 1..32; kestrel allows what its MADT can describe.
constexpr uint64_t kMaxMemMib = 1ull << 20;  // 1 TiB, as --memory
constexpr uint64_t kMaxBucket = 1ull << 62;  // keeps token arithmetic far from overflow

Result<std::array<uint8_t, 6>> mac_from_string(const std::string& s) {
    // Through --net's parser: a comma would let the string carry more --net options.
    if (s.find(',') != std::string::npos)
        return bad_request("guest_mac '{}' is not six hex bytes like 06:00:AC:10:00:02", s);
    auto n = parse_net("tap=x,mac=" + s);
    if (!n) return bad_request("guest_mac '{}' is not six hex bytes like 06:00:AC:10:00:02", s);
    if (!n->mac) return bad_request("guest_mac '{}' is not a MAC address", s);
    return *n->mac;
}

std::string mac_to_string(const std::array<uint8_t, 6>& m) {
    return fmt::format("{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", m[0], m[1], m[2], m[3], m[4], m[5]);
}

Result<TokenBucketConfig> parse_bucket(const json& j, std::string what) {
    auto f = TRY(Fields::of(j, what));
    TokenBucketConfig b;
    b.size = TRY(f.required(f.number("size", 0, kMaxBucket), "size"));
    b.one_time_burst = TRY(f.number("one_time_burst", 0, kMaxBucket)).value_or(0);
    b.refill_time_ms = TRY(f.required(f.number("refill_time", 0, 1ull << 40), "refill_time"));
    TRY(f.finish());
    return b;
}

json bucket_json(const TokenBucketConfig& b) {
    json j = {{"size", b.size}, {"refill_time", b.refill_time_ms}};
    if (b.one_time_burst) j["one_time_burst"] = b.one_time_burst;
    return j;
}

json rate_limiter_json(const RateLimiterConfig& r) {
    json j = json::object();
    if (r.bandwidth) j["bandwidth"] = bucket_json(*r.bandwidth);
    if (r.ops) j["ops"] = bucket_json(*r.ops);
    return j;
}

Result<std::optional<RateLimiterConfig>> optional_limiter(Fields& f, const char* key, std::string_view what) {
    const json* j = f.object(key);
    if (!j) return std::nullopt;
    return TRY(parse_rate_limiter(*j, fmt::format("{}.{}", what, key)));
}

// The id in the URL and the one in the body must agree (Firecracker refuses a mismatch).
Result<std::string> matching_id(Fields& f, const char* key, std::string_view path_id, std::string_view what) {
    auto id = TRY(f.required(f.str(key), key));
    if (!valid_id(id)) return bad_request("{}: {} '{}' is not 1-64 letters, digits, '_' or '-'", what, key, id);
    if (!path_id.empty() && id != path_id)
        return bad_request("{}: {} '{}' in the body differs from '{}' in the path", what, key, id, path_id);
    return id;
}

}  // namespace

Result<RateLimiterConfig> parse_rate_limiter(const json& j, std::string_view what) {
    auto f = TRY(Fields::of(j, what));
    RateLimiterConfig r;
    if (const json* b = f.object("bandwidth")) r.bandwidth = TRY(parse_bucket(*b, fmt::format("{}.bandwidth", what)));
    if (const json* o = f.object("ops")) r.ops = TRY(parse_bucket(*o, fmt::format("{}.ops", what)));
    TRY(f.finish());
    return r;
}

Result<void> apply_boot_source(VmConfig& cfg, const json& j) {
    auto f = TRY(Fields::of(j, "boot-source"));
    auto kernel = TRY(f.required(f.str("kernel_image_path"), "kernel_image_path"));
    auto args = TRY(f.str("boot_args"));
    auto initrd = TRY(f.str("initrd_path"));
    TRY(f.finish());
    if (kernel.empty()) return bad_request("boot-source: kernel_image_path is empty");
    if (args && args->size() > 4096) return bad_request("boot-source: boot_args is longer than 4096 bytes");
    cfg.kernel = kernel;
    cfg.initrd = initrd.value_or("");
    cfg.cmdline = args.value_or(std::string(kDefaultCmdline));
    return {};
}

Result<void> apply_machine_config(VmConfig& cfg, const json& j, bool patch) {
    auto f = TRY(Fields::of(j, "machine-config"));
    auto vcpus = TRY(f.number("vcpu_count", 1, kMaxVcpus));
    auto mib = TRY(f.number("mem_size_mib", 16, kMaxMemMib));
    auto smt = TRY(f.boolean("smt"));
    auto dirty = TRY(f.boolean("track_dirty_pages"));
    auto tmpl = TRY(f.str("cpu_template"));
    auto huge = TRY(f.str("huge_pages"));
    auto pit = TRY(f.boolean("pit"));  // kestrel: --pit (GET /vm/config has it when set)
    TRY(f.finish());
    if (!patch && (!vcpus || !mib)) return bad_request("machine-config: vcpu_count and mem_size_mib are required");
    if (tmpl && *tmpl != "None") return bad_request("machine-config: cpu_template '{}' is not supported (only None)", *tmpl);
    if (huge && *huge != "None" && *huge != "Transparent")
        return bad_request("machine-config: huge_pages '{}' is not supported (None: 4 KiB pages, or Transparent: "
                           "transparent huge pages above 2 MiB, kestrel's default)", *huge);
    if (vcpus) cfg.cpus = static_cast<uint32_t>(*vcpus);
    if (mib) cfg.memory_bytes = *mib << 20;
    if (smt) cfg.smt = *smt;
    else if (!patch) cfg.smt = false;
    if (dirty) cfg.track_dirty_pages = *dirty;
    else if (!patch) cfg.track_dirty_pages = false;
    if (huge) cfg.huge_pages = *huge == "Transparent";
    else if (!patch) cfg.huge_pages = true;
    if (pit) cfg.pit = *pit;
    return {};
}

Result<DiskConfig> parse_drive(const json& j, std::string_view path_id) {
    auto f = TRY(Fields::of(j, "drive"));
    DiskConfig d;
    d.id = TRY(matching_id(f, "drive_id", path_id, "drive"));
    d.path = TRY(f.required(f.str("path_on_host"), "path_on_host"));
    d.is_root = TRY(f.required(f.boolean("is_root_device"), "is_root_device"));
    d.read_only = TRY(f.boolean("is_read_only")).value_or(false);
    d.partuuid = TRY(f.str("partuuid")).value_or("");
    auto cache = TRY(f.str("cache_type"));
    auto engine = TRY(f.str("io_engine"));
    d.rate_limiter = TRY(optional_limiter(f, "rate_limiter", "drive"));
    if (TRY(f.str("socket"))) return bad_request("drive: vhost-user drives (socket) are not supported");
    // kestrel's own, beyond Firecracker's object (documented as extensions).
    d.direct = TRY(f.boolean("direct")).value_or(false);
    d.serial = TRY(f.str("serial")).value_or("");
    d.queues = static_cast<uint16_t>(TRY(f.number("queues", 1, 64)).value_or(0));
    TRY(f.finish());
    if (d.path.empty()) return bad_request("drive {}: path_on_host is empty", d.id);
    if (d.serial.size() > 20) return bad_request("drive {}: serial is longer than 20 bytes", d.id);
    if (!cache || *cache == "Unsafe") d.cache = DiskConfig::Cache::Unsafe;
    else if (*cache == "Writeback") d.cache = DiskConfig::Cache::Writeback;
    else return bad_request("drive {}: cache_type '{}' is not Unsafe or Writeback", d.id, *cache);
    if (engine && *engine != "Sync" && *engine != "Async")
        return bad_request("drive {}: io_engine '{}' is not Sync or Async", d.id, *engine);
    if (!d.partuuid.empty() && !d.is_root)
        return bad_request("drive {}: partuuid is only used with is_root_device", d.id);
    return d;
}

Result<DrivePatch> parse_drive_patch(const json& j, std::string_view path_id) {
    auto f = TRY(Fields::of(j, "drive"));
    DrivePatch p;
    p.id = TRY(matching_id(f, "drive_id", path_id, "drive"));
    p.path = TRY(f.str("path_on_host"));
    p.rate_limiter = TRY(optional_limiter(f, "rate_limiter", "drive"));
    TRY(f.finish());
    if (p.path && p.path->empty()) return bad_request("drive {}: path_on_host is empty", p.id);
    if (!p.path && !p.rate_limiter) return bad_request("drive {}: nothing to change (path_on_host or rate_limiter)", p.id);
    return p;
}

Result<NetConfig> parse_network_interface(const json& j, std::string_view path_id) {
    auto f = TRY(Fields::of(j, "network-interface"));
    NetConfig n;
    n.id = TRY(matching_id(f, "iface_id", path_id, "network-interface"));
    n.tap = TRY(f.required(f.str("host_dev_name"), "host_dev_name"));
    if (auto mac = TRY(f.str("guest_mac"))) n.mac = TRY(mac_from_string(*mac));
    n.rx_rate_limiter = TRY(optional_limiter(f, "rx_rate_limiter", "network-interface"));
    n.tx_rate_limiter = TRY(optional_limiter(f, "tx_rate_limiter", "network-interface"));
    TRY(f.finish());
    if (n.tap.empty() || n.tap.size() >= 16)
        return bad_request("network-interface {}: host_dev_name '{}' is not a tap name of 1-15 bytes", n.id, n.tap);
    return n;
}

Result<NetPatch> parse_network_patch(const json& j, std::string_view path_id) {
    auto f = TRY(Fields::of(j, "network-interface"));
    NetPatch p;
    p.id = TRY(matching_id(f, "iface_id", path_id, "network-interface"));
    p.rx = TRY(optional_limiter(f, "rx_rate_limiter", "network-interface"));
    p.tx = TRY(optional_limiter(f, "tx_rate_limiter", "network-interface"));
    TRY(f.finish());
    return p;
}

Result<VsockConfig> parse_vsock(const json& j) {
    auto f = TRY(Fields::of(j, "vsock"));
    VsockConfig v;
    // CIDs 0-2 are the hypervisor, reserved and the host (virtio 1.2 §5.10.4).
    v.cid = static_cast<uint32_t>(TRY(f.required(f.number("guest_cid", 3, 0xfffffffe), "guest_cid")));
    v.socket = TRY(f.required(f.str("uds_path"), "uds_path"));
    (void)TRY(f.str("vsock_id"));  // deprecated in Firecracker; accepted and ignored
    TRY(f.finish());
    if (v.socket.empty()) return bad_request("vsock: uds_path is empty");
    return v;
}

Result<std::optional<RateLimiterConfig>> parse_entropy(const json& j) {
    auto f = TRY(Fields::of(j, "entropy"));
    auto r = TRY(optional_limiter(f, "rate_limiter", "entropy"));
    TRY(f.finish());
    return r;
}

Result<BalloonConfig> parse_balloon(const json& j) {
    auto f = TRY(Fields::of(j, "balloon"));
    BalloonConfig b;
    // num_pages is a le32 count of 4 KiB pages (virtio 1.2 §5.5.4): at most 2^32 - 1.
    b.amount_mib = static_cast<uint32_t>(TRY(f.required(f.number("amount_mib", 0, (1u << 20) - 1), "amount_mib")));
    b.deflate_on_oom = TRY(f.required(f.boolean("deflate_on_oom"), "deflate_on_oom"));
    if (auto s = TRY(f.number("stats_polling_interval_s", 0, 0xffffffff)); s && *s != 0)
        return bad_request("balloon: stats_polling_interval_s: balloon statistics are not supported by kestrel (give 0)");
    b.free_page_reporting = TRY(f.boolean("free_page_reporting")).value_or(false);
    if (TRY(f.boolean("free_page_hinting")).value_or(false))
        return bad_request("balloon: free_page_hinting is not supported by kestrel (free_page_reporting is)");
    TRY(f.finish());
    return b;
}

json balloon_json(const BalloonConfig& b) {
    return {{"amount_mib", b.amount_mib},
            {"deflate_on_oom", b.deflate_on_oom},
            {"stats_polling_interval_s", 0},
            {"free_page_reporting", b.free_page_reporting}};
}

Result<LoggerConfig> parse_logger(const json& j) {
    auto f = TRY(Fields::of(j, "logger"));
    LoggerConfig l;
    l.path = TRY(f.str("log_path"));
    if (l.path && l.path->empty()) return bad_request("logger: log_path is empty");
    auto level = TRY(f.str("level"));
    (void)TRY(f.boolean("show_level"));
    (void)TRY(f.boolean("show_log_origin"));
    (void)TRY(f.str("module"));
    TRY(f.finish());
    if (level) {
        // Firecracker's names, case-insensitive, onto spdlog's.
        std::string lv;
        for (char c : *level) lv += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
        static const std::pair<const char*, const char*> names[] = {
            {"error", "error"}, {"warning", "warn"}, {"warn", "warn"}, {"info", "info"},
            {"debug", "debug"}, {"trace", "trace"}, {"off", "off"}};
        for (auto [fc, sp] : names)
            if (lv == fc) l.level = sp;
        if (!l.level) return bad_request("logger: level '{}' is not one of Error, Warning, Info, Debug, Trace, Off", *level);
    }
    return l;
}

Result<std::string> parse_metrics(const json& j) {
    auto f = TRY(Fields::of(j, "metrics"));
    auto path = TRY(f.required(f.str("metrics_path"), "metrics_path"));
    TRY(f.finish());
    if (path.empty()) return bad_request("metrics: metrics_path is empty");
    return path;
}

Result<std::string> parse_device_state_path(const json& j) {
    auto f = TRY(Fields::of(j, "device-state"));
    auto path = TRY(f.required(f.str("path"), "path"));
    TRY(f.finish());
    if (path.empty()) return bad_request("device-state: path is empty");
    return path;
}

Result<SnapshotCreateRequest> parse_snapshot_create(const json& j) {
    auto f = TRY(Fields::of(j, "snapshot/create"));
    SnapshotCreateRequest r;
    r.snapshot_path = TRY(f.required(f.str("snapshot_path"), "snapshot_path"));
    r.mem_file_path = TRY(f.required(f.str("mem_file_path"), "mem_file_path"));
    auto type = TRY(f.str("snapshot_type"));
    TRY(f.str("version"));  // deprecated in Firecracker: accepted, ignored
    TRY(f.finish());
    if (type && *type != "Full" && *type != "Diff")
        return bad_request("snapshot/create: snapshot_type '{}' is not Full or Diff", *type);
    r.diff = type && *type == "Diff";
    if (r.snapshot_path.empty() || r.mem_file_path.empty())
        return bad_request("snapshot/create: snapshot_path and mem_file_path must not be empty");
    if (r.snapshot_path == r.mem_file_path)
        return bad_request("snapshot/create: snapshot_path and mem_file_path are the same file");
    return r;
}

Result<MigrateRequest> parse_migrate(const json& j) {
    auto f = TRY(Fields::of(j, "migrate"));
    MigrateRequest r;
    r.destination = TRY(f.required(f.str("destination"), "destination"));
    auto downtime = TRY(f.number("downtime_ms", 1, 60'000));
    auto bandwidth = TRY(f.number("max_bandwidth", 0, uint64_t{1} << 40));
    auto timeout = TRY(f.number("timeout_s", 1, 86'400));
    auto converge = TRY(f.boolean("auto_converge"));
    TRY(f.finish());
    if (!r.destination.starts_with("unix:") && !r.destination.starts_with("tcp:"))
        return bad_request("migrate: destination '{}' is not unix:PATH or tcp:HOST:PORT", r.destination);
    if (bandwidth && *bandwidth != 0 && *bandwidth < (1u << 20))
        return bad_request("migrate: max_bandwidth {} is under 1 MiB/s (0: unlimited)", *bandwidth);
    if (downtime) r.downtime_ms = static_cast<uint32_t>(*downtime);
    if (bandwidth) r.max_bandwidth = *bandwidth;
    if (timeout) r.timeout_s = static_cast<uint32_t>(*timeout);
    if (converge) r.auto_converge = *converge;
    return r;
}

Result<SnapshotLoadRequest> parse_snapshot_load(const json& j) {
    auto f = TRY(Fields::of(j, "snapshot/load"));
    SnapshotLoadRequest r;
    r.snapshot_path = TRY(f.required(f.str("snapshot_path"), "snapshot_path"));
    auto mem_file = TRY(f.str("mem_file_path"));
    const json* backend = f.object("mem_backend");
    auto diff = TRY(f.boolean("enable_diff_snapshots"));
    r.resume_vm = TRY(f.boolean("resume_vm")).value_or(false);
    TRY(f.finish());
    if (backend && mem_file) return bad_request("snapshot/load: give mem_backend or mem_file_path, not both");
    if (backend) {
        auto b = TRY(Fields::of(*backend, "snapshot/load: mem_backend"));
        auto type = TRY(b.required(b.str("backend_type"), "backend_type"));
        r.mem_path = TRY(b.required(b.str("backend_path"), "backend_path"));
        TRY(b.finish());
        if (type == "Uffd") return bad_request("snapshot/load: mem_backend type Uffd is not supported (File is)");
        if (type != "File") return bad_request("snapshot/load: mem_backend type '{}' is not File or Uffd", type);
    } else if (mem_file) {
        r.mem_path = *mem_file;
    } else {
        return bad_request("snapshot/load: mem_backend is required");
    }
    r.enable_diff_snapshots = diff.value_or(false);
    if (r.snapshot_path.empty() || r.mem_path.empty())
        return bad_request("snapshot/load: snapshot_path and the memory file's path must not be empty");
    return r;
}

Result<VmConfig> apply_full_config(VmConfig cfg, const json& j) {
    auto f = TRY(Fields::of(j, "configuration"));
    if (const json* b = f.object("boot-source")) TRY(apply_boot_source(cfg, *b));
    if (const json* m = f.object("machine-config")) TRY(apply_machine_config(cfg, *m, false));
    if (const json* ds = f.object("drives")) {
        if (!ds->is_array()) return bad_request("configuration: 'drives' must be an array");
        cfg.disks.clear();
        for (const auto& d : *ds) {
            auto disk = TRY(parse_drive(d, ""));
            // What PUT /drives refuses (controller.cpp), refused here too.
            for (const auto& other : cfg.disks) {
                if (other.id == disk.id) return bad_request("configuration: drive_id '{}' given twice", disk.id);
                if (other.is_root && disk.is_root)
                    return bad_request("configuration: drive {}: drive '{}' is already the root device", disk.id,
                                       other.id);
            }
            cfg.disks.push_back(std::move(disk));
        }
    }
    if (const json* ns = f.object("network-interfaces")) {
        if (!ns->is_array()) return bad_request("configuration: 'network-interfaces' must be an array");
        cfg.nets.clear();
        for (const auto& n : *ns) {
            auto net = TRY(parse_network_interface(n, ""));
            for (const auto& other : cfg.nets) {
                if (other.id == net.id) return bad_request("configuration: iface_id '{}' given twice", net.id);
                if (other.tap == net.tap)
                    return bad_request("configuration: network-interface {}: tap '{}' is already used by '{}'",
                                       net.id, net.tap, other.id);
                if (net.mac && other.mac == net.mac)
                    return bad_request("configuration: network-interface {}: guest_mac is already used by '{}'",
                                       net.id, other.id);
            }
            cfg.nets.push_back(std::move(net));
        }
    }
    if (const json* v = f.object("vsock")) cfg.vsock = TRY(parse_vsock(*v));
    if (const json* e = f.object("entropy")) {
        cfg.rng = true;
        cfg.rng_rate_limiter = TRY(parse_entropy(*e));
    }
    if (const json* b = f.object("balloon")) cfg.balloon = TRY(parse_balloon(*b));
    if (const json* l = f.object("logger")) {
        auto lc = TRY(parse_logger(*l));
        if (lc.path) cfg.log_path = *lc.path;
        if (lc.level) cfg.log_level = *lc.level;
    }
    if (const json* m = f.object("metrics")) cfg.metrics_path = TRY(parse_metrics(*m));
    // Firecracker's other sections, accepted only when empty so a config written for
    // Firecracker does not silently lose a device kestrel does not have.
    for (const char* key : {"mmds-config", "cpu-config", "pmem", "memory-hotplug"}) {
        const json* o = f.object(key);
        if (o && !o->empty()) return bad_request("configuration: '{}' is not supported by kestrel", key);
    }
    TRY(f.finish());
    return cfg;
}

json machine_config_json(const VmConfig& cfg) {
    json j = {{"vcpu_count", cfg.cpus},
              {"mem_size_mib", cfg.memory_bytes >> 20},
              {"smt", cfg.smt},
              {"track_dirty_pages", cfg.track_dirty_pages},
              {"huge_pages", cfg.huge_pages ? "Transparent" : "None"}};
    if (cfg.pit) j["pit"] = true;  // kestrel's --pit: a snapshot or migration keeps it
    return j;
}

json drive_json(const DiskConfig& d) {
    json j = {{"drive_id", d.id},
              {"path_on_host", d.path},
              {"is_root_device", d.is_root},
              {"is_read_only", d.read_only},
              {"cache_type", d.cache == DiskConfig::Cache::Unsafe ? "Unsafe" : "Writeback"},
              {"io_engine", "Async"}};
    if (!d.partuuid.empty()) j["partuuid"] = d.partuuid;
    if (d.rate_limiter) j["rate_limiter"] = rate_limiter_json(*d.rate_limiter);
    if (d.direct) j["direct"] = true;
    if (!d.serial.empty()) j["serial"] = d.serial;
    if (d.queues) j["queues"] = d.queues;
    return j;
}

json network_interface_json(const NetConfig& n) {
    json j = {{"iface_id", n.id}, {"host_dev_name", n.tap}};
    if (n.mac) j["guest_mac"] = mac_to_string(*n.mac);
    if (n.rx_rate_limiter) j["rx_rate_limiter"] = rate_limiter_json(*n.rx_rate_limiter);
    if (n.tx_rate_limiter) j["tx_rate_limiter"] = rate_limiter_json(*n.tx_rate_limiter);
    return j;
}

json full_config_json(const VmConfig& cfg) {
    json j = json::object();
    if (!cfg.kernel.empty()) {
        json b = {{"kernel_image_path", cfg.kernel}, {"boot_args", cfg.cmdline}};
        if (!cfg.initrd.empty()) b["initrd_path"] = cfg.initrd;
        j["boot-source"] = b;
    }
    j["machine-config"] = machine_config_json(cfg);
    j["drives"] = json::array();
    for (const auto& d : cfg.disks) j["drives"].push_back(drive_json(d));
    j["network-interfaces"] = json::array();
    for (const auto& n : cfg.nets) j["network-interfaces"].push_back(network_interface_json(n));
    if (cfg.vsock) j["vsock"] = {{"guest_cid", cfg.vsock->cid}, {"uds_path", cfg.vsock->socket}};
    if (cfg.rng) {
        json e = json::object();
        if (cfg.rng_rate_limiter) e["rate_limiter"] = rate_limiter_json(*cfg.rng_rate_limiter);
        j["entropy"] = e;
    }
    if (cfg.balloon) j["balloon"] = balloon_json(*cfg.balloon);
    if (!cfg.metrics_path.empty()) j["metrics"] = {{"metrics_path", cfg.metrics_path}};
    // The level as Firecracker names it, so the object applies again (parse_logger).
    if (!cfg.log_path.empty() || cfg.log_level != "warn") {
        json l = json::object();
        if (!cfg.log_path.empty()) l["log_path"] = cfg.log_path;
        static const std::pair<const char*, const char*> names[] = {
            {"error", "Error"}, {"warn", "Warning"}, {"info", "Info"},
            {"debug", "Debug"}, {"trace", "Trace"}, {"off", "Off"}};
        for (auto [sp, fc] : names)
            if (cfg.log_level == sp) l["level"] = fc;
        j["logger"] = l;
    }
    return j;
}

}  // namespace kestrel::api
