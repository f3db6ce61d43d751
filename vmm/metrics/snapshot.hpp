// metrics::Snapshot: every value kestrel exports at one moment, as plain data: what
// collect() reads from the Vmm, its devices and the process, and what the renderers (the
// Prometheus text of GET /metrics, the Firecracker JSON lines of metrics_path) turn into
// text. Nothing here reads a device; tests build snapshots by hand.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "devices/metrics.hpp"

namespace kestrel::metrics {

enum class Type { Counter, Gauge, Histogram };
enum class Unit { None, Nanoseconds };  // Nanoseconds: shown as seconds (Prometheus), µs (JSON)

struct Sample {
    std::string family;  // Prometheus name without `_total`: "kestrel_blk_read_bytes"
    std::string group;   // what it belongs to: "blk", "net", "vsock", "rng", "vcpu", "serial", "process"
    std::string name;    // within the group: "read_bytes"
    std::string help;
    Type type = Type::Counter;
    Unit unit = Unit::None;
    std::string device_label;  // "drive", "iface", "vcpu"; empty: none
    std::string device;        // its value: "rootfs", "0"
    int queue = -1;            // -1: not per queue
    std::string label_key, label_value;  // one more label: op="read", reason="io_in"
    uint64_t value = 0;        // Counter
    int64_t gauge = 0;         // Gauge
    LatencyHistogram::Snapshot hist;  // Histogram (durations in ns)
};

using Snapshot = std::vector<Sample>;

}  // namespace kestrel::metrics
