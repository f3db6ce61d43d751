// Firecracker's JSON objects (src/firecracker/swagger/firecracker.yaml) to and from VmConfig:
// the bodies of PUT/PATCH requests, `--config-file` and `GET /vm/config`. Every input is
// hostile: types are checked, unknown fields refused (as Firecracker's serde
// deny_unknown_fields does), numbers bounded; errors are ErrorKind::BadRequest naming the
// object and field.
#pragma once

#include <nlohmann/json.hpp>

#include <optional>
#include <string>

#include "vmm/vm_config.hpp"

namespace kestrel::api {

using json = nlohmann::json;

// PUT /boot-source {kernel_image_path, boot_args?, initrd_path?}
Result<void> apply_boot_source(VmConfig& cfg, const json& j);
// PUT /machine-config (all of vcpu_count and mem_size_mib required) or PATCH (any subset):
// {vcpu_count, mem_size_mib, smt?, track_dirty_pages?, cpu_template?, huge_pages?}
Result<void> apply_machine_config(VmConfig& cfg, const json& j, bool patch);
// PUT /drives/{id}: {drive_id, path_on_host, is_root_device, is_read_only?, partuuid?,
// cache_type?, io_engine?, rate_limiter?} plus kestrel's own direct?, serial?, queues?.
Result<DiskConfig> parse_drive(const json& j, std::string_view path_id);
// PATCH /drives/{id}: {drive_id, path_on_host?, rate_limiter?}
struct DrivePatch {
    std::string id;
    std::optional<std::string> path;
    std::optional<RateLimiterConfig> rate_limiter;
};
Result<DrivePatch> parse_drive_patch(const json& j, std::string_view path_id);
// PUT /network-interfaces/{id}: {iface_id, host_dev_name, guest_mac?, rx_rate_limiter?,
// tx_rate_limiter?}
Result<NetConfig> parse_network_interface(const json& j, std::string_view path_id);
// PATCH /network-interfaces/{id}: {iface_id, rx_rate_limiter?, tx_rate_limiter?}
struct NetPatch {
    std::string id;
    std::optional<RateLimiterConfig> rx, tx;
};
Result<NetPatch> parse_network_patch(const json& j, std::string_view path_id);
// PUT /vsock {guest_cid, uds_path, vsock_id? (deprecated, ignored)}
Result<VsockConfig> parse_vsock(const json& j);
// PUT /entropy {rate_limiter?}
Result<std::optional<RateLimiterConfig>> parse_entropy(const json& j);
// PUT /balloon {amount_mib, deflate_on_oom, stats_polling_interval_s? (0 only),
// free_page_reporting?, free_page_hinting? (false only)}
Result<BalloonConfig> parse_balloon(const json& j);
json balloon_json(const BalloonConfig& b);
// {bandwidth?: TokenBucket, ops?: TokenBucket}
Result<RateLimiterConfig> parse_rate_limiter(const json& j, std::string_view what);
// PUT /logger {log_path?, level?, show_level?, show_log_origin?, module?}
struct LoggerConfig {
    std::optional<std::string> path;
    std::optional<std::string> level;  // spdlog level name
};
Result<LoggerConfig> parse_logger(const json& j);
// PUT /metrics {metrics_path}
Result<std::string> parse_metrics(const json& j);
// PUT /vm/device-state/{save,load} {path} (kestrel, for tests)
Result<std::string> parse_device_state_path(const json& j);

// PUT /snapshot/create and /snapshot/load, Firecracker's bodies (firecracker.yaml
// SnapshotCreateParams, SnapshotLoadParams). File memory backends only.
struct SnapshotCreateRequest {
    std::string snapshot_path;  // the state file
    std::string mem_file_path;  // guest RAM
    bool diff = false;          // snapshot_type Diff: only the pages changed since the last one
    bool operator==(const SnapshotCreateRequest&) const = default;
};
struct SnapshotLoadRequest {
    std::string snapshot_path;
    std::string mem_path;  // mem_backend.backend_path, or the deprecated mem_file_path
    bool resume_vm = false;
    bool enable_diff_snapshots = false;  // track dirty pages in the restored VM (for Diff snapshots)
    bool operator==(const SnapshotLoadRequest&) const = default;
};
// PUT /migrate (kestrel): live migration to a kestrel started with --incoming.
struct MigrateRequest {
    std::string destination;     // unix:PATH | tcp:HOST:PORT
    uint32_t downtime_ms = 50;   // the stop-and-copy target
    uint64_t max_bandwidth = 0;  // bytes/s, 0 = unlimited
    uint32_t timeout_s = 600;    // the whole migration
    // Throttle the vCPUs, progressively, while the guest dirties memory faster than the
    // link sends it (MigrationJob::kThrottle*).
    bool auto_converge = false;
    bool operator==(const MigrateRequest&) const = default;
};
Result<MigrateRequest> parse_migrate(const json& j);
Result<SnapshotCreateRequest> parse_snapshot_create(const json& j);
Result<SnapshotLoadRequest> parse_snapshot_load(const json& j);

// A whole configuration (--config-file, GET /vm/config): "boot-source", "machine-config",
// "drives", "network-interfaces", "vsock", "entropy", "logger", "metrics". Applied over
// `base` (the defaults and anything the command line set).
Result<VmConfig> apply_full_config(VmConfig base, const json& j);
json full_config_json(const VmConfig& cfg);
json machine_config_json(const VmConfig& cfg);
json drive_json(const DiskConfig& d);
json network_interface_json(const NetConfig& n);

}  // namespace kestrel::api
