// NetMetrics: per-device counters of a VirtioNet, readable from any thread (relaxed atomics:
// each counter is exact, a snapshot across counters is not).
#pragma once

#include <atomic>
#include <cstdint>

namespace kestrel {

struct NetMetrics {
    using Counter = std::atomic<uint64_t>;
    // Guest -> tap. Bytes are frame bytes (the 12-byte virtio header not included).
    Counter tx_packets, tx_bytes;
    Counter tx_batches;            // io_uring submissions carrying frames
    Counter tx_malformed_chains;   // broke §2.7 rules; returned with len 0
    Counter tx_bad_length;         // shorter than header + Ethernet header, or past 64 KiB + header
    Counter tx_bad_header;         // offload the driver did not negotiate (§5.1.6.2.1), or bad flags
    Counter tx_tap_errors;         // the tap refused the frame (link down, bad GSO fields, ENOBUFS)

    // Tap -> guest.
    Counter rx_packets, rx_bytes;
    Counter rx_batches;            // completion rounds that delivered at least one frame
    Counter rx_buffers_used;       // guest chains filled (> rx_packets with merged buffers)
    Counter rx_malformed_chains;   // broke §2.7 rules, had readable parts or no room for the header
    Counter rx_drops_too_big;      // frame did not fit the guest's buffer (no MRG_RXBUF)
    Counter rx_drops_bad_offload;  // tap handed a GSO frame the driver cannot take
    Counter rx_tap_errors;         // reads that failed (other than cancellation)
    Counter rx_stalls;             // times reading paused because the guest had no buffers

    Counter interrupts;            // used-buffer notifications sent (both queues)
    Counter queue_errors;          // a queue itself broke: device needs reset

    static void inc(Counter& c, uint64_t n = 1) { c.fetch_add(n, std::memory_order_relaxed); }
    static uint64_t get(const Counter& c) { return c.load(std::memory_order_relaxed); }
};

}  // namespace kestrel
