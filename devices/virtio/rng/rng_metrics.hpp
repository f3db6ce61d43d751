// Counters for one virtio-rng device; read by the VMM's metrics/API thread while the
// event-loop thread updates them, hence atomics (relaxed: they are statistics, not sync).
#pragma once

#include <atomic>
#include <cstdint>

#include "devices/metrics.hpp"

namespace kestrel {

struct RngMetrics {
    std::atomic<uint64_t> requests{0};          // chains completed (including with 0 bytes)
    std::atomic<uint64_t> bytes{0};             // entropy bytes handed to the guest
    std::atomic<uint64_t> malformed_chains{0};  // refused by chain validation, completed with 0
    std::atomic<uint64_t> entropy_errors{0};    // the host entropy source failed
    std::atomic<uint64_t> queue_errors{0};      // the queue itself broke (device needs reset)
    std::atomic<uint64_t> interrupts{0};        // used-buffer notifications sent

    void visit(MetricVisitor& v) const {
        v.counter("requests", load_metric(requests), "chains completed (including with 0 bytes)");
        v.counter("bytes", load_metric(bytes), "entropy bytes handed to the guest");
        v.counter("malformed_chains", load_metric(malformed_chains), "refused by chain validation, completed with 0");
        v.counter("entropy_errors", load_metric(entropy_errors), "the host entropy source failed");
        v.counter("queue_errors", load_metric(queue_errors), "the queue itself broke (device needs reset)");
        v.counter("interrupts", load_metric(interrupts), "used-buffer notifications sent");
    }
};

}  // namespace kestrel
