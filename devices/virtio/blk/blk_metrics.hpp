// BlkMetrics: per-device counters of a VirtioBlk, readable from any thread (relaxed atomics:
// each counter is exact, a snapshot across counters is not), plus per-queue counters and an
// in-flight gauge, and request latency histograms (submission to completion, host I/O only:
// requests answered at once, GET_ID and rejects, are not in them).
#pragma once

#include <array>
#include <atomic>
#include <cstdint>

#include "devices/metrics.hpp"

namespace kestrel {

struct BlkMetrics {
    using Counter = std::atomic<uint64_t>;
    // Requests by type (counted when parsed, whatever their outcome).
    Counter reads, writes, flushes, get_ids, discards, write_zeroes, other_types;
    Counter bytes_read, bytes_written;
    // Guest errors by kind; each completed the request with the status noted.
    Counter bad_header;         // header < 16 bytes (IOERR)
    Counter missing_status;     // no writable byte for the status (returned with len 0)
    Counter bad_length;         // data not a multiple of 512, empty or oversized (IOERR)
    Counter out_of_range;       // sector range past capacity (IOERR)
    Counter read_only;          // write/discard/write-zeroes on a read-only disk (IOERR)
    Counter unsupported;        // unknown or not negotiated type, bad flags (UNSUPP)
    Counter bad_segment;        // discard/write-zeroes segment list malformed (IOERR/UNSUPP)
    Counter malformed_chains;   // chain broke §2.7 rules (returned with len 0)
    Counter queue_errors;       // the queue itself broke: device needs reset
    Counter io_errors;          // host I/O failed or was short (IOERR)
    // Processing.
    Counter batches;            // avail-ring passes that submitted I/O (in one or more chunks)
    Counter interrupts;         // used-buffer notifications sent
    Counter bounced;            // O_DIRECT requests copied through the queue's bounce pool
    // Host memory budget (virtio_blk.hpp).
    Counter budget_waits;       // requests that waited for room in the bounce pool / descriptor budget
    Counter bounce_peak_bytes;  // most bounce-pool bytes one queue had leased at once (a high-water mark)
    Counter stuck_resets;       // resets that gave up on host I/O after kResetLimit

    // Per queue (index = virtqueue). kMaxQueues bounds VirtioBlk::kMaxQueues (static_assert
    // in virtio_blk.cpp); num_queues is the device's, set once at construction.
    static constexpr uint16_t kMaxQueues = 64;
    struct Queue {
        Counter requests;                 // chains taken from this queue, whatever their outcome
        Counter read_bytes, write_bytes;  // as bytes_read/bytes_written, for this queue
        std::atomic<int64_t> in_flight{0};  // requests in host I/O now (a gauge)
    };
    std::array<Queue, kMaxQueues> queues{};
    uint16_t num_queues = 1;

    // Host I/O latency by operation, recorded when the request completes.
    enum class Op : uint8_t { Read, Write, Flush, Other };  // Other: discard, write-zeroes
    std::array<LatencyHistogram, 4> latency{};
    void record_latency(Op op, uint64_t ns) { latency[static_cast<size_t>(op)].record(ns); }

    static void inc(Counter& c, uint64_t n = 1) { add_metric(c, n); }
    static void raise_to(Counter& c, uint64_t v) {
        if constexpr (!kMetricsBuilt) return;
        uint64_t cur = c.load(std::memory_order_relaxed);
        while (cur < v && !c.compare_exchange_weak(cur, v, std::memory_order_relaxed)) {
        }
    }
    static uint64_t get(const Counter& c) { return c.load(std::memory_order_relaxed); }
    static void set(std::atomic<int64_t>& g, int64_t v) { g.store(v, std::memory_order_relaxed); }

    void visit(MetricVisitor& v) const {
        v.counter("reads", load_metric(reads), "IN requests (counted when parsed, whatever their outcome)");
        v.counter("writes", load_metric(writes), "OUT requests");
        v.counter("flushes", load_metric(flushes), "FLUSH requests");
        v.counter("get_ids", load_metric(get_ids), "GET_ID requests");
        v.counter("discards", load_metric(discards), "DISCARD requests");
        v.counter("write_zeroes", load_metric(write_zeroes), "WRITE_ZEROES requests");
        v.counter("other_types", load_metric(other_types), "requests of other types (answered UNSUPP)");
        v.counter("read_bytes", load_metric(bytes_read), "bytes read for the guest (completed reads)");
        v.counter("write_bytes", load_metric(bytes_written), "bytes written for the guest (completed writes)");
        v.counter("bad_header", load_metric(bad_header), "header shorter than 16 bytes (IOERR)");
        v.counter("missing_status", load_metric(missing_status), "no writable status byte (returned with len 0)");
        v.counter("bad_length", load_metric(bad_length), "data not a multiple of 512, empty or longer than seg_max x size_max (IOERR)");
        v.counter("out_of_range", load_metric(out_of_range), "sector range past capacity (IOERR)");
        v.counter("read_only", load_metric(read_only), "write, discard or write-zeroes on a read-only disk (IOERR)");
        v.counter("unsupported", load_metric(unsupported), "unknown or not negotiated type, bad flags (UNSUPP)");
        v.counter("bad_segment", load_metric(bad_segment), "discard/write-zeroes segment list malformed");
        v.counter("malformed_chains", load_metric(malformed_chains), "chains that broke §2.7 rules (returned with len 0)");
        v.counter("queue_errors", load_metric(queue_errors), "a queue itself broke: device needs reset");
        v.counter("io_errors", load_metric(io_errors), "host I/O failed or was short (IOERR)");
        v.counter("batches", load_metric(batches), "avail-ring passes that submitted I/O");
        v.counter("interrupts", load_metric(interrupts), "used-buffer notifications sent");
        v.counter("bounced", load_metric(bounced), "O_DIRECT requests copied through the bounce pool");
        v.counter("budget_waits", load_metric(budget_waits), "requests that waited for room in the per-queue host memory budget");
        v.gauge("bounce_peak_bytes", static_cast<int64_t>(load_metric(bounce_peak_bytes)), "most bounce-pool bytes one queue had leased at once");
        v.counter("stuck_resets", load_metric(stuck_resets), "resets that gave up on host I/O after the reset limit");
        for (int q = 0; q < num_queues && q < kMaxQueues; ++q) {
            const Queue& c = queues[static_cast<size_t>(q)];
            v.counter("queue_requests", load_metric(c.requests), "requests taken from this queue", q);
            v.counter("queue_read_bytes", load_metric(c.read_bytes), "bytes read for the guest through this queue", q);
            v.counter("queue_write_bytes", load_metric(c.write_bytes), "bytes written for the guest through this queue", q);
            v.gauge("in_flight", c.in_flight.load(std::memory_order_relaxed), "requests of this queue in host I/O now", q);
        }
        static constexpr std::string_view kOps[] = {"read", "write", "flush", "other"};
        for (size_t i = 0; i < latency.size(); ++i)
            v.histogram("request_duration_seconds", latency[i].snapshot(),
                        "host I/O time of requests, submission to completion, by operation "
                        "(other: discard, write-zeroes)",
                        {"op", kOps[i]});
    }
};

}  // namespace kestrel
