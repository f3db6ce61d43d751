// Firecracker-format metrics: one JSON object per line, written to metrics_path (PUT
// /metrics) on `PUT /actions {"action_type": "FlushMetrics"}`, every 60 s while the VM runs
// and once at exit (Firecracker's src/vmm/src/logger/metrics.rs).
//
// As Firecracker does: "utc_timestamp_ms" first, then groups named like its own — per
// device `block_<drive_id>` and `net_<iface_id>` plus their sums `block` and `net`, `vsock`,
// `entropy` (rng), `uart` (console), `vcpu` (summed over vCPUs, as Firecracker keeps one
// vcpu group), `vmm` (process-wide) and `logger` — with Firecracker's key where one means
// the same thing (block read_bytes, read_count, flush_count; net rx_bytes_count,
// tx_packets_count...; vcpu exit_io_in...) and kestrel's own name otherwise. Counters are
// written as the change since the previous line, as Firecracker's SharedIncMetric does;
// gauges (SharedStoreMetric) as their value. Per-queue values are arrays indexed by queue;
// a latency histogram is `<op>_agg` (Firecracker's read_agg/write_agg) with sum_us, plus
// kestrel's count and cumulative buckets `le_us`. Durations are in µs.
#pragma once

#include <map>
#include <memory>
#include <string>

#include "vmm/base/error.hpp"
#include "vmm/base/fd.hpp"
#include "vmm/metrics/snapshot.hpp"

namespace kestrel::metrics {

// Keeps each counter's last written value: one renderer per destination.
class FcMetricsRenderer {
public:
    std::string render_line(const Snapshot& s, int64_t utc_timestamp_ms);
    // Firecracker's logger group: flushes that failed (write error, short write).
    uint64_t missed = 0;

private:
    uint64_t delta(const std::string& key, uint64_t now);
    std::map<std::string, uint64_t> last_;
};

// Firecracker's key for kestrel's `name` in `group` ("blk", "net", ...), "" when it has none.
std::string_view firecracker_key(std::string_view group, std::string_view name);

// The metrics_path destination. Opened when configured (PUT /metrics, --config-file) so a
// bad path is refused then; a FIFO is opened read-write as Firecracker does, so no reader
// is needed at open time, and non-blocking: a line that does not fit is lost and counted
// (logger.missed_metrics_count in the next line), never waited for.
class MetricsFile {
public:
    static Result<std::unique_ptr<MetricsFile>> open(const std::string& path);
    Result<void> flush(const Snapshot& s);
    const std::string& path() const { return path_; }

private:
    MetricsFile(std::string path, UniqueFd fd) : path_(std::move(path)), fd_(std::move(fd)) {}
    std::string path_;
    UniqueFd fd_;
    FcMetricsRenderer renderer_;
};

}  // namespace kestrel::metrics
