// Controller: the VMM thread (the process's main thread). Until the guest starts it holds
// the configuration (built from flags, --config-file and PUT requests); from InstanceStart on
// it holds the Vmm. It acts, one at a time and in order, on API requests (RequestQueue), on
// SIGINT/SIGTERM and on the guest's end, and decides what each state allows (Firecracker's
// pre-boot and runtime controllers in rpc_interface.rs).
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "vmm/api/request_queue.hpp"
#include "vmm/seccomp/seccomp.hpp"
#include "vmm/vm_config.hpp"
#include "vmm/vmm.hpp"

namespace kestrel {

namespace metrics {
class MetricsFile;
}
class MigrationJob;

struct ControllerOptions {
    VmConfig config;
    bool start_now = false;    // boot at once (a kernel was given), else wait for InstanceStart
    std::optional<api::SnapshotLoadRequest> restore;  // `run --restore`: load this at once instead
    std::string incoming;      // `run --incoming`: receive a live migration here at once instead
    // `run --remap FROM=TO` (with --incoming): a disk path, tap name or vsock socket path of
    // the source's configuration that is FROM is TO here (another host's layout).
    std::vector<std::pair<std::string, std::string>> remap;
    // `run --allow-path DIR`, `--allow-tap NAME` (with --incoming): when given, the host
    // files and taps the stream's configuration names must be among these (the source is
    // trusted with nothing else); checked before anything is opened.
    std::vector<std::string> allow_paths, allow_taps;
    std::string api_socket;    // empty: no API
    std::string instance_id = "kestrel";
    seccomp::Settings seccomp;  // --seccomp, --seccomp-test (vmm/seccomp/seccomp.hpp)
};

class Controller {
public:
    // How often metrics_path gets a line while the VM runs (Firecracker's period).
    static constexpr std::chrono::seconds kMetricsPeriod{60};
    // How long a source whose VM migrated still answers the API (GET /migrate: completed).
    static constexpr std::chrono::milliseconds kMigratedGrace{1500};

    explicit Controller(ControllerOptions o);
    ~Controller();
    // Runs until the VM ends (or, without a VM, until a signal) and returns the process's
    // exit code (README: 0 powered off, 1 could not build/run, 3 reset, ...).
    int run();

    // One request, on the controller's thread (public for tests that drive it directly).
    api::ApiResponse handle(const api::ApiRequest& r);

private:
    Result<api::json> dispatch(const api::ApiRequest& r);
    // PUT /snapshot/load: a VM restored from a snapshot (Vmm::restore) in a kestrel with none.
    Result<void> load_snapshot(const api::SnapshotLoadRequest& req);
    // --incoming: accepts one migration stream (migration/migration_stream.hpp), builds the
    // VM it describes, fills its RAM, loads its state, answers the source and starts it.
    // Anything wrong in the stream is refused with the reason (the source keeps its VM).
    Result<void> receive_migration();
    Result<void> start_vm();
    Result<void> preboot_only(const char* what) const;
    Result<api::json> instance_info() const;
    Result<api::json> vm_info() const;
    // Metrics (vmm/metrics/): GET /metrics as Prometheus text; metrics_path's JSON lines,
    // written on FlushMetrics, every kMetricsPeriod while the VM runs and once at exit.
    api::ApiResponse prometheus_metrics() const;
    Result<void> flush_metrics();

    ControllerOptions o_;
    VmConfig pending_;  // the configuration InstanceStart builds from
    std::unique_ptr<Vmm> vmm_;
    std::shared_ptr<api::RequestQueue> queue_;  // shared with the API thread (api_server.hpp)
    std::chrono::steady_clock::time_point started_at_{};
    std::unique_ptr<metrics::MetricsFile> metrics_file_;  // PUT /metrics, --config-file
    std::unique_ptr<MigrationJob> migration_;  // PUT /migrate; joined before the VM stops
};

// Firecracker puts the root drive first (/dev/vda) and adds root= to the kernel command line:
// root=/dev/vda, or root=PARTUUID=... when a partuuid was given; ro or rw as the drive is.
VmConfig with_root_device(VmConfig cfg);

}  // namespace kestrel
