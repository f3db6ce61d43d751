// VsockMetrics: counters of one VirtioVsock, readable from any thread (relaxed atomics: each
// counter is exact, a snapshot across counters is not).
#pragma once

#include <atomic>
#include <cstdint>

#include "devices/metrics.hpp"

namespace kestrel {

struct VsockMetrics {
    using Counter = std::atomic<uint64_t>;
    // Connections.
    Counter host_connections_opened;   // host CONNECT answered by the guest's RESPONSE
    Counter guest_connections_opened;  // guest REQUEST connected to <path>_<port>
    Counter connections_refused;       // guest RST to our REQUEST, no host listener, bad
                                       // CONNECT line, connection cap reached
    Counter connections_reset;         // open connections ended by an RST (either side)
    Counter connections_closed;        // every connection torn down, whatever the reason
    // Data.
    Counter bytes_to_guest, bytes_to_host;
    Counter packets_to_guest, packets_from_guest;
    Counter credit_updates_sent;
    // Guest packets dropped (completed with used length 0), by reason.
    Counter malformed_chains;     // chain broke §2.7 rules
    Counter short_header;         // tx chain readable part < 44 bytes
    Counter bad_len;              // hdr.len > readable payload bytes, or > the payload cap
    Counter wrong_dst_cid;        // dst_cid is not the host (2): dropped silently
    Counter wrong_src_cid;        // src_cid is not the guest's CID: dropped silently
    Counter bad_type;             // type is not STREAM: answered with RST
    Counter bad_op;               // unknown op: answered with RST
    Counter unknown_connection;   // not a REQUEST and no such connection: answered with RST
    Counter credit_violation;     // RW beyond the credit we granted: connection reset
    Counter rx_buffer_too_small;  // rx chain with < 44 writable bytes (or 44 when data needed)
    Counter rst_queue_full;       // an RST for the guest dropped: too many queued
    // Device.
    Counter queue_errors;         // a queue broke: device needs reset
    Counter interrupts;           // used-buffer notifications sent

    static void inc(Counter& c, uint64_t n = 1) { add_metric(c, n); }
    static uint64_t get(const Counter& c) { return c.load(std::memory_order_relaxed); }

    void visit(MetricVisitor& v) const {
        v.counter("host_connections_opened", load_metric(host_connections_opened), "host CONNECT answered by the guest's RESPONSE");
        v.counter("guest_connections_opened", load_metric(guest_connections_opened), "guest REQUEST connected to <path>_<port>");
        v.counter("connections_refused", load_metric(connections_refused), "connections refused (guest RST to a REQUEST, no host listener, bad CONNECT line, cap reached)");
        v.counter("connections_reset", load_metric(connections_reset), "open connections ended by an RST (either side)");
        v.counter("connections_closed", load_metric(connections_closed), "every connection torn down, whatever the reason");
        v.counter("bytes_to_guest", load_metric(bytes_to_guest), "stream bytes delivered to the guest");
        v.counter("bytes_to_host", load_metric(bytes_to_host), "stream bytes delivered to host sockets");
        v.counter("packets_to_guest", load_metric(packets_to_guest), "packets put on the rx queue");
        v.counter("packets_from_guest", load_metric(packets_from_guest), "packets taken from the tx queue");
        v.counter("credit_updates_sent", load_metric(credit_updates_sent), "CREDIT_UPDATE packets sent to the guest");
        v.counter("malformed_chains", load_metric(malformed_chains), "chain broke §2.7 rules");
        v.counter("short_header", load_metric(short_header), "tx chain readable part < 44 bytes");
        v.counter("bad_len", load_metric(bad_len), "hdr.len > readable payload bytes, or > the payload cap");
        v.counter("wrong_dst_cid", load_metric(wrong_dst_cid), "dst_cid is not the host (2): dropped silently");
        v.counter("wrong_src_cid", load_metric(wrong_src_cid), "src_cid is not the guest's CID: dropped silently");
        v.counter("bad_type", load_metric(bad_type), "type is not STREAM: answered with RST");
        v.counter("bad_op", load_metric(bad_op), "unknown op: answered with RST");
        v.counter("unknown_connection", load_metric(unknown_connection), "not a REQUEST and no such connection: answered with RST");
        v.counter("credit_violation", load_metric(credit_violation), "RW beyond the credit we granted: connection reset");
        v.counter("rx_buffer_too_small", load_metric(rx_buffer_too_small), "rx chain with < 44 writable bytes (or 44 when data needed)");
        v.counter("rst_queue_full", load_metric(rst_queue_full), "an RST for the guest dropped: too many queued");
        v.counter("queue_errors", load_metric(queue_errors), "a queue broke: device needs reset");
        v.counter("interrupts", load_metric(interrupts), "used-buffer notifications sent");
    }
};

}  // namespace kestrel
