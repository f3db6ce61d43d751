// MetricVisitor: how a device hands out its counters without knowing who reads them (the exit
// log, the API's Prometheus and Firecracker-style exporters in vmm/metrics/). A device's
// metrics struct lists each counter once, with a stable snake_case name (the Prometheus
// suffix, without the `kestrel_<device>_` prefix and `_total`) and one line of help. Reading
// is lock-free: the counters are relaxed atomics, each exact, a visit not a consistent
// snapshot across them.
//
// Also here, because devices count into them: LatencyHistogram (fixed log2 buckets, relaxed
// atomics, recorded at completion) and the process-wide io_uring totals.
#pragma once

#include <time.h>

#include <array>
#include <atomic>
#include <bit>
#include <cstdint>
#include <string_view>

namespace kestrel {

// Off only in a build for measuring what metrics cost (`meson setup -Dmetrics=false`,
// tools/bench-metrics.sh): every counter update below and every clock read taken for a metric
// compiles to nothing, so the same device and vCPU code runs with and without them. Products
// always count (metrics are never read for anything but reporting).
#ifdef KESTREL_NO_METRICS
inline constexpr bool kMetricsBuilt = false;
#else
inline constexpr bool kMetricsBuilt = true;
#endif

inline uint64_t load_metric(const std::atomic<uint64_t>& c) { return c.load(std::memory_order_relaxed); }

// A counter any thread may bump: one relaxed fetch_add (a locked add on x86).
inline void add_metric(std::atomic<uint64_t>& c, uint64_t n = 1) {
    if constexpr (kMetricsBuilt) c.fetch_add(n, std::memory_order_relaxed);
}

// A counter only one thread writes (a vCPU's own): a plain load and store, no locked
// instruction; other threads read it whole (relaxed atomic) at any time.
inline void bump_owned(std::atomic<uint64_t>& c, uint64_t n = 1) {
    if constexpr (kMetricsBuilt) c.store(c.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
}

// CLOCK_MONOTONIC in ns: a vDSO call, no system call (~20-50 ns).
inline uint64_t monotonic_ns() {
    timespec ts{};
    ::clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000u + static_cast<uint64_t>(ts.tv_nsec);
}

// monotonic_ns() for a metric only (time in KVM_RUN, request latency): 0 without metrics.
inline uint64_t metric_clock_ns() {
    if constexpr (kMetricsBuilt) return monotonic_ns();
    return 0;
}

// Durations in fixed log2 buckets: bucket i holds values <= 4 µs x 2^i (4 µs .. 8.4 s), the
// last one everything slower (+Inf). Recording is two relaxed fetch_adds; a reader's snapshot
// is each bucket exact, not a consistent cut across buckets (count is their sum, so a
// snapshot's +Inf bucket always equals its count, as Prometheus requires).
struct LatencyHistogram {
    static constexpr int kFinite = 22;
    static constexpr int kFirstBoundUs = 4;

    std::array<std::atomic<uint64_t>, kFinite + 1> buckets{};
    std::atomic<uint64_t> sum_ns{0};

    // Which bucket a duration falls in (rounded up to whole µs, so no value sits under a
    // bound it exceeds).
    static int bucket_of(uint64_t ns) {
        const uint64_t us = ns / 1000 + (ns % 1000 != 0);
        if (us <= kFirstBoundUs) return 0;
        const int i = static_cast<int>(std::bit_width(us - 1)) - 2;
        return i < kFinite ? i : kFinite;
    }
    // Upper bound of finite bucket i, in µs.
    static constexpr uint64_t bound_us(int i) { return uint64_t{kFirstBoundUs} << i; }

    void record(uint64_t ns) {
        if constexpr (!kMetricsBuilt) return;
        buckets[static_cast<size_t>(bucket_of(ns))].fetch_add(1, std::memory_order_relaxed);
        sum_ns.fetch_add(ns, std::memory_order_relaxed);
    }

    struct Snapshot {
        std::array<uint64_t, kFinite + 1> counts{};  // per bucket, not cumulative
        uint64_t sum_ns = 0;
        uint64_t count() const {
            uint64_t n = 0;
            for (uint64_t c : counts) n += c;
            return n;
        }
    };
    Snapshot snapshot() const {
        Snapshot s;
        for (size_t i = 0; i < buckets.size(); ++i) s.counts[i] = buckets[i].load(std::memory_order_relaxed);
        s.sum_ns = sum_ns.load(std::memory_order_relaxed);
        return s;
    }
};

// A second label on a value, besides the device and queue: op="read", reason="io_in".
struct MetricLabel {
    std::string_view key;
    std::string_view value;
};

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
    // A distribution of durations (`name` ends in _seconds). Visitors that only list counters
    // (the exit log) leave it out.
    virtual void histogram(std::string_view /*name*/, const LatencyHistogram::Snapshot& /*h*/,
                           std::string_view /*help*/, MetricLabel /*label*/ = {}, int /*queue*/ = -1) {}
};

// io_uring traffic of the whole process (every virtio-blk queue's ring and every virtio-net
// tap ring): SQEs handed to the kernel and CQEs taken back, counted where the rings submit
// and reap. Relaxed atomics: rings live on the event loop, resets run on vCPU threads.
struct IoUringTotals {
    std::atomic<uint64_t> submit_calls{0};  // io_uring_submit system calls
    std::atomic<uint64_t> submissions{0};   // SQEs the kernel took
    std::atomic<uint64_t> completions{0};   // CQEs reaped

    void submitted(int n) {
        add_metric(submit_calls);
        if (n > 0) add_metric(submissions, static_cast<uint64_t>(n));
    }
    void completed(uint64_t n) {
        if (n) add_metric(completions, n);
    }
};

inline IoUringTotals& io_uring_totals() {
    static IoUringTotals totals;
    return totals;
}

}  // namespace kestrel
