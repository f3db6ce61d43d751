// BlkMetrics: per-device counters of a VirtioBlk, readable from any thread (relaxed atomics:
// each counter is exact, a snapshot across counters is not).
#pragma once

#include <atomic>
#include <cstdint>

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

    static void inc(Counter& c, uint64_t n = 1) { c.fetch_add(n, std::memory_order_relaxed); }
    static void raise_to(Counter& c, uint64_t v) {
        uint64_t cur = c.load(std::memory_order_relaxed);
        while (cur < v && !c.compare_exchange_weak(cur, v, std::memory_order_relaxed)) {
        }
    }
    static uint64_t get(const Counter& c) { return c.load(std::memory_order_relaxed); }
};

}  // namespace kestrel
