// MetricVisitor: how a device hands out its counters without knowing who reads them (the exit
// log, the API's Prometheus and Firecracker-style exporters). A device's metrics struct lists
// each counter once, with a stable snake_case name (the Prometheus suffix, without the
// `kestrel_<device>_` prefix and `_total`) and one line of help. Reading is lock-free: the
// counters are relaxed atomics, each exact, a visit not a consistent snapshot across them.
#pragma once

#include <atomic>
#include <cstdint>
#include <string_view>

namespace kestrel {

class MetricVisitor {
public:
    virtual ~MetricVisitor() = default;
    // A monotonic count. `queue` is the virtqueue (or other per-queue index) it belongs to,
    // -1 for the whole device.
    virtual void counter(std::string_view name, uint64_t value, std::string_view help,
                         int queue = -1) = 0;
    // A value that goes up and down (requests in flight, open connections).
    virtual void gauge(std::string_view name, int64_t value, std::string_view help, int queue = -1) {
        counter(name, static_cast<uint64_t>(value), help, queue);
    }
};

inline uint64_t load_metric(const std::atomic<uint64_t>& c) { return c.load(std::memory_order_relaxed); }

}  // namespace kestrel
