// MigrationJob: the source side of a live migration (PUT /migrate), on its own thread while
// the guest runs (pre-copy, as QEMU and Cloud Hypervisor do it):
//   1. connect to the destination (kestrel run --incoming), send the configuration;
//   2. round 0: every non-zero page of guest RAM, with KVM's dirty log on;
//   3. rounds 1..: the pages written since the round before, until what is left would take
//      no longer than half of `downtime_ms` at the bandwidth measured so far (the other half
//      is for the state) — at least one such round — or kMaxRounds pass (then it stops anyway
//      and says how long the downtime was expected to be); with auto_converge, vCPUs are
//      throttled more and more while the guest outruns the link;
//   4. pause the VM, send the last dirty pages and the state file (every vCPU and device),
//      hand the disk images over (fsync, unlock), DONE; the destination locks them and
//      answers. On OK the VM has moved: this kestrel ends (exit 0,
//      "migrated"). On any failure before that — destination refuses or dies, the stream
//      breaks, timeout_s passes — the VM resumes here as if nothing happened and GET /migrate
//      says why: nothing is lost.
// While it runs the controller refuses what would change the VM under it (pause, resume,
// snapshots, device state, drive changes, another migration). Progress is read lock-free.
#pragma once

#include <atomic>
#include <chrono>
#include <mutex>
#include <string>
#include <thread>

#include "migration/migration_stream.hpp"
#include "vmm/api/fc_json.hpp"
#include "vmm/vmm.hpp"

namespace kestrel {

class MigrationJob {
public:
    static constexpr int kMaxRounds = 30;
    // auto_converge, as QEMU's defaults have it: when for two rounds in a row the guest
    // dirtied more than half of what a round sent (it outruns the link), the vCPUs are
    // throttled (Vmm::set_cpu_throttle) at kThrottleInitial %, then kThrottleStep % more each
    // time it happens again; back to 0 when the migration ends, however it ends.
    static constexpr unsigned kThrottleInitial = 20, kThrottleStep = 10;
    enum class Phase { Connecting, Precopy, StopAndCopy, Completed, Failed, Cancelled };

    struct Progress {
        Phase phase = Phase::Connecting;
        int round = 0;
        uint64_t pages_sent = 0, bytes_sent = 0;
        uint64_t dirty_pages = 0;        // left after the last round
        uint64_t dirty_rate = 0;         // pages/s written by the guest in the last round
        uint64_t bandwidth = 0;          // bytes/s of the last round
        uint64_t expected_downtime_ms = 0;
        unsigned throttle_pct = 0;       // auto_converge's vCPU throttle now
        uint64_t eta_ms = 0;             // estimate: this round's rest, then the downtime
        uint64_t downtime_ms = 0;        // measured, once completed
        uint64_t total_ms = 0;
        std::string error;
    };

    // `vmm` must outlive the job (the controller joins it before it stops the VM);
    // `config_json` is the VM's configuration as GET /vm/config gives it.
    MigrationJob(Vmm& vmm, api::MigrateRequest req, std::string config_json);
    ~MigrationJob();  // cancels and joins

    Progress progress() const;
    bool running() const { return running_.load(); }
    void cancel();

private:
    void run();
    Result<void> migrate(bool& paused, bool& released);
    Result<void> send_round(migration::StreamWriter& w, const std::vector<std::vector<uint64_t>>* dirty,
                            uint64_t& pages);
    void set_phase(Phase p);

    Vmm& vmm_;
    const api::MigrateRequest req_;
    const std::string config_json_;
    std::atomic<bool> running_{true}, cancel_{false};
    std::atomic<int> sock_{-1};
    mutable std::mutex mu_;
    Progress p_;
    std::chrono::steady_clock::time_point started_;
    std::thread thread_;
};

const char* phase_name(MigrationJob::Phase p);

}  // namespace kestrel
