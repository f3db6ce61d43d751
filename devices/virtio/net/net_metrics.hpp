// NetMetrics: per-device counters of a VirtioNet, readable from any thread (relaxed atomics:
// each counter is exact, a snapshot across counters is not).
#pragma once

#include <atomic>
#include <cstdint>

#include "devices/metrics.hpp"

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
    Counter tx_gso_packets;        // sent frames the tap segments (HOST_TSO4/6 in use)
    Counter tx_csum_offloaded;     // sent frames with NEEDS_CSUM (CSUM in use)

    // Tap -> guest.
    Counter rx_packets, rx_bytes;
    Counter rx_batches;            // completion rounds that delivered at least one frame
    Counter rx_buffers_used;       // guest chains filled (> rx_packets with merged buffers)
    Counter rx_gso_packets;        // delivered frames the guest segments (GUEST_TSO4/6 in use)
    Counter rx_malformed_chains;   // broke §2.7 rules, had readable parts or no room for the header
    Counter rx_drops_too_big;      // frame did not fit the guest's buffer (no MRG_RXBUF)
    Counter rx_drops_bad_offload;  // tap handed a GSO frame the driver cannot take
    Counter rx_tap_errors;         // reads that failed (other than cancellation)
    Counter rx_stalls;             // times reading paused because the guest had no buffers

    Counter interrupts;            // used-buffer notifications sent (both queues)

    // Control queue (§5.1.6.5).
    Counter ctrl_requests;         // commands the driver sent
    Counter ctrl_refused;          // answered VIRTIO_NET_ERR: unknown class/command, malformed
    Counter announce_requests;     // times the device asked the guest to announce itself
    Counter announce_acks;         // VIRTIO_NET_CTRL_ANNOUNCE_ACKs: the guest sent its announcement
    Counter queue_errors;          // a queue itself broke: device needs reset

    static void inc(Counter& c, uint64_t n = 1) { add_metric(c, n); }
    static uint64_t get(const Counter& c) { return c.load(std::memory_order_relaxed); }

    void visit(MetricVisitor& v) const {
        v.counter("tx_packets", load_metric(tx_packets), "frames sent from the guest to the tap");
        v.counter("tx_bytes", load_metric(tx_bytes), "frame bytes sent to the tap (virtio header excluded)");
        v.counter("tx_batches", load_metric(tx_batches), "io_uring submissions carrying frames");
        v.counter("tx_malformed_chains", load_metric(tx_malformed_chains), "broke §2.7 rules; returned with len 0");
        v.counter("tx_bad_length", load_metric(tx_bad_length), "shorter than header + Ethernet header, or past 64 KiB + header");
        v.counter("tx_bad_header", load_metric(tx_bad_header), "offload the driver did not negotiate (§5.1.6.2.1), or bad flags");
        v.counter("tx_tap_errors", load_metric(tx_tap_errors), "the tap refused the frame (link down, bad GSO fields, ENOBUFS)");
        v.counter("tx_gso_packets", load_metric(tx_gso_packets), "sent frames the tap segments (HOST_TSO4/6 in use)");
        v.counter("tx_csum_offloaded", load_metric(tx_csum_offloaded), "sent frames with NEEDS_CSUM (CSUM in use)");
        v.counter("rx_packets", load_metric(rx_packets), "frames delivered from the tap to the guest");
        v.counter("rx_bytes", load_metric(rx_bytes), "frame bytes delivered to the guest (virtio header excluded)");
        v.counter("rx_batches", load_metric(rx_batches), "completion rounds that delivered at least one frame");
        v.counter("rx_buffers_used", load_metric(rx_buffers_used), "guest chains filled (> rx_packets with merged buffers)");
        v.counter("rx_gso_packets", load_metric(rx_gso_packets), "delivered frames the guest segments (GUEST_TSO4/6 in use)");
        v.counter("rx_malformed_chains", load_metric(rx_malformed_chains), "broke §2.7 rules, had readable parts or no room for the header");
        v.counter("rx_drops_too_big", load_metric(rx_drops_too_big), "frame did not fit the guest's buffer (no MRG_RXBUF)");
        v.counter("rx_drops_bad_offload", load_metric(rx_drops_bad_offload), "tap handed a GSO frame the driver cannot take");
        v.counter("rx_tap_errors", load_metric(rx_tap_errors), "reads that failed (other than cancellation)");
        v.counter("rx_stalls", load_metric(rx_stalls), "times reading paused because the guest had no buffers");
        v.counter("interrupts", load_metric(interrupts), "used-buffer notifications sent (both queues)");
        v.counter("ctrl_requests", load_metric(ctrl_requests), "control-queue commands the driver sent");
        v.counter("ctrl_refused", load_metric(ctrl_refused), "control commands answered VIRTIO_NET_ERR (unknown or malformed)");
        v.counter("announce_requests", load_metric(announce_requests), "times the device asked the guest to announce itself (VIRTIO_NET_S_ANNOUNCE)");
        v.counter("announce_acks", load_metric(announce_acks), "VIRTIO_NET_CTRL_ANNOUNCE_ACKs: the guest sent its gratuitous ARP/NA");
        v.counter("queue_errors", load_metric(queue_errors), "a queue itself broke: device needs reset");
    }
};

}  // namespace kestrel
