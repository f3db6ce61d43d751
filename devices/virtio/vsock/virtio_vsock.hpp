// VirtioVsock: the virtio socket device (virtio 1.2 §5.10), stream sockets only, with the
// host side on unix sockets in the protocol Firecracker documents:
//
//  - host-initiated: kestrel listens on options.uds_path. A host program connects and
//    writes "CONNECT <guest port>\n". The device picks a host port (from 2^30 upwards) and
//    sends the guest a REQUEST. On the guest's RESPONSE it writes "OK <host port>\n" to the
//    program, then copies bytes both ways; on the guest's RST (nobody listening) it closes
//    the program's connection without writing anything.
//  - guest-initiated: a guest REQUEST to host port P connects to "<uds_path>_<P>". Connected:
//    RESPONSE; no listener (or its backlog is full): RST.
//
// Data path (event-loop thread, level-triggered EventRegistry): host -> guest bytes are read
// from the unix socket straight into the guest's rx buffers, after a 44-byte header, never
// more than the guest's free credit (§5.10.6.3) nor 64 KiB per packet. A socket is only
// watched for input while its connection has credit and rx buffers are available, so a slow
// guest stops kestrel reading, and the host program sees ordinary socket back-pressure.
// Guest -> host bytes are written to the unix socket at once; what it does not take (EAGAIN)
// is buffered, at most buf_alloc bytes per connection, which the credit we grant guarantees
// (fwd_cnt only advances when bytes reach the socket). A CREDIT_UPDATE goes out when the
// guest's view of our free space falls below kCreditUpdateThreshold and we have freed some,
// or when the guest sends CREDIT_REQUEST.
//
// Control packets for the guest (RESPONSE, REQUEST, SHUTDOWN, CREDIT_UPDATE) are flags on
// their connection, so they need no queue; RSTs outlive their connection and wait in a queue
// capped at kMaxPendingRsts (further ones are dropped and counted). Control packets go before
// data whenever rx buffers are scarce.
//
// Closing: guest RST closes the unix socket at once. Guest SHUTDOWN: F_SEND -> shutdown(WR)
// on the unix socket once the buffered bytes are out; F_RECEIVE -> stop reading it; both ->
// flush, close, answer RST (what Linux waits for after close()). Host EOF (read returns 0)
// after a half-close -> SHUTDOWN(F_SEND) to the guest; host gone for good (hang-up, reset,
// EPIPE) -> RST to the guest and close. A host program that connects and never completes
// its CONNECT line, or a guest that never answers a REQUEST, holds its slot until the
// program closes the socket (there are no timers on the event loop).
//
// Hostile guests: a chain whose readable part is shorter than the header, whose hdr.len
// exceeds the payload it carries or 64 KiB, or that breaks §2.7 is completed with length 0
// and counted; dst_cid other than the host or src_cid other than the guest: dropped and
// counted; unknown type or op, and packets (other than RST) for unknown connections: RST;
// RW beyond the credit we granted: the connection is reset. No packet makes kestrel block
// or allocate beyond the per-connection buffer.
//
// Caps: kMaxConnections (default 256) established/connecting connections plus host
// programs still sending their CONNECT line; worst-case buffered guest data is
// max_connections * buf_alloc (64 MiB with the defaults). Beyond the cap, new host
// connections are accepted and closed at once, and guest REQUESTs get RST.
//
// Event queue (§5.10.6.7): only used to tell the driver about a transport reset. An
// activation that continues from saved queue positions (a restored snapshot, or device state
// loaded into a VM) has no connections: the device puts VIRTIO_VSOCK_EVENT_TRANSPORT_RESET
// in the driver's first event buffer, and the driver resets every connection it had
// (Firecracker does the same after a snapshot restore). Otherwise its buffers stay untouched.
//
// Snapshots (settle_queues): rx buffers popped and not filled are handed back; connections
// are not saved (host programs reconnect to the restored VM).
//
// reset() (§2.4): closes every connection (no RST: the driver is gone) and forgets the
// queues; the listener stays bound so host programs can connect again after re-activation.
//
// Threads: config, activate and reset come from vCPU threads; queue_notify and socket
// callbacks from the event loop. One mutex guards all state; interrupts are raised with it
// released (a transport may call reset() under its own lock and take that lock again in
// signal_queue). Callbacks hold a shared_ptr to the state, so a late callback after reset
// or destruction finds nothing to do.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "devices/event_registry.hpp"
#include "devices/virtio/virtio_device.hpp"
#include "devices/virtio/vsock/vsock_metrics.hpp"
#include "devices/virtio/vsock/vsock_spec.hpp"

namespace kestrel {

struct VirtioVsockOptions {
    uint64_t guest_cid = 0;   // 3 .. 0xfffffffe (virtio 1.2 §5.10.4, §5.10.6.2)
    std::string uds_path;     // host-initiated listener; guest-initiated go to <uds_path>_<port>
    uint32_t buf_alloc = 256 * 1024;  // receive buffer advertised per connection
    uint32_t max_connections = 256;
    uint16_t queue_size = 256;        // max queue size offered, power of 2
};

class VirtioVsock final : public VirtioDevice {
public:
    // The most payload one packet carries either way: Linux's VIRTIO_VSOCK_MAX_PKT_BUF_SIZE.
    static constexpr uint32_t kMaxPayload = 64 * 1024;
    static constexpr uint32_t kCreditUpdateThreshold = 64 * 1024;
    static constexpr uint32_t kHostPortBase = 1u << 30;  // first port for CONNECT requests
    static constexpr size_t kMaxPendingRsts = 1024;
    static constexpr size_t kMaxConnectLineBytes = 32;  // "CONNECT 4294967295\r\n" is 20
    static constexpr uint32_t kMaxConnectionsLimit = 4096;

    // Binds the listener (see UnixListener::create for the stale-socket policy); fails on a
    // bad CID, a path too long for "<path>_4294967295", or a socket in use.
    static Result<std::unique_ptr<VirtioVsock>> create(const VirtioVsockOptions& opts);
    ~VirtioVsock() override;

    uint16_t device_type() const override { return vsock::kDeviceType; }
    uint64_t device_features() const override;
    uint16_t num_queues() const override { return vsock::kNumQueues; }
    uint16_t max_queue_size() const override { return queue_size_; }
    void read_config(uint64_t offset, std::span<uint8_t> data) override;
    // §5.10.4: guest_cid is read-only; writes are ignored.
    void write_config(uint64_t offset, std::span<const uint8_t> data) override;
    Result<void> activate(ActivateContext ctx) override;
    void queue_notify(uint16_t index) override;
    void reset() override;
    bool needs_reset() const override;
    Result<QueuePositions> settle_queues() override;

    const VsockMetrics& metrics() const;
    void visit_metrics(MetricVisitor& v) const override { metrics().visit(v); }
    uint64_t guest_cid() const { return guest_cid_; }
    const std::string& uds_path() const;
    // True when create() found a stale socket file at uds_path and replaced it.
    bool replaced_stale_socket() const;
    // Open connections (including host programs still sending CONNECT), for tests/metrics.
    size_t connection_count() const;

    struct Core;  // all mutable state, in virtio_vsock.cpp

private:
    VirtioVsock(std::shared_ptr<Core> core, uint64_t cid, uint16_t queue_size);
    Result<void> activate_locked(const ActivateContext& ctx);  // core_->mu held
    bool send_transport_reset_locked();                        // core_->mu held

    std::shared_ptr<Core> core_;
    uint64_t guest_cid_;
    uint16_t queue_size_;
};

}  // namespace kestrel
