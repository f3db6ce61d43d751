// VirtioNet: the virtio network device (virtio 1.2 §5.1) on a host tap, one receive queue (0),
// one transmit queue (1) and the control queue (2), its back-end an io_uring on the tap fd
// (TapRing).
//
// Control queue (§5.1.6.5): offered only for VIRTIO_NET_F_GUEST_ANNOUNCE, so the one command
// served is VIRTIO_NET_CTRL_ANNOUNCE_ACK; every other command is answered VIRTIO_NET_ERR.
// Served at once on the notify (Linux busy-waits for the answer), so nothing is ever in
// flight there. announce() after a live migration sets VIRTIO_NET_S_ANNOUNCE and raises the
// config interrupt; the guest's driver sends its gratuitous ARP / unsolicited NA (it knows
// its IP addresses, the host does not) and acks, which clears the bit (§5.1.6.5.3).
//
// Data path (NetDataPath, one per activation, on the event-loop thread):
//  TX: a notify pops every available chain, checks it and its header, and prepares one
//      writev per frame (validated header copy + the guest's frame bytes in place); the batch
//      goes to the kernel in one io_uring_submit, tap writes complete inline, chains are
//      returned with add_used(head, 0) and the driver interrupted once per batch.
//  RX: kRxSlots reads stay posted on the tap into device buffers of 12 + 65550 bytes. Each
//      frame is copied into guest chains in tap order: one chain per frame, or with
//      VIRTIO_NET_F_MRG_RXBUF as many chains as it needs, num_buffers set in the first
//      (§5.1.6.4). With no guest buffers, frames wait in their slots and no further reads are
//      posted: the tap's own queue holds the rest until the driver adds buffers and notifies.
//      A frame is dropped (and counted) only when it cannot fit a chain without MRG_RXBUF.
//
// Rate limiting (devices/rate_limiter.hpp): an RX and a TX limiter, one op and the frame's
// bytes per frame; TX before the frame is sent, RX before it is delivered. A refused TX
// chain is held and the queue stops; a refused RX frame waits in its slot, the rest in the
// tap. Each limiter's timerfd is on the EventRegistry while the device is active.
//
// Guest errors (malformed chains, bad lengths, offloads not negotiated) are counted and the
// chain returned with length 0; a broken ring puts the device in NEEDS_RESET.
//
// Reset (§2.4) cancels the posted reads and waits for every io_uring request to finish before
// forgetting the queues. Lifetimes: the GuestMemory, VirtioInterrupt and EventRegistry given
// to activate() must live until reset() (the destructor resets).
//
// Threads: config, activate and reset from vCPU threads; notifies and completions on the
// event loop. io_uring requests are only ever submitted from the event loop (see TapRing);
// activate() wakes it to post the first reads. Interrupts are raised with no lock held.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>

#include "devices/event_registry.hpp"
#include "devices/rate_limiter.hpp"
#include "devices/virtio/net/net_metrics.hpp"
#include "devices/virtio/net/net_spec.hpp"
#include "devices/virtio/net/tap.hpp"
#include "devices/virtio/queue/split_queue.hpp"
#include "devices/virtio/virtio_device.hpp"

namespace kestrel {

using MacAddress = std::array<uint8_t, 6>;

struct VirtioNetOptions {
    std::string tap;             // name of an existing tap interface, or
    int tap_fd = -1;             // a tap fd set up by the caller (see Tap::from_fd); owned after create
    std::optional<MacAddress> mac;  // default: default_mac(tap name)
    // A live migration's destination: `tap` must exist; when it is busy (the source holds it,
    // on this host) it is attached by attach_tap() just before the VM's state is loaded
    // (see detach_tap), else now, so it is up long before the guest arrives.
    bool defer_if_busy = false;
    uint16_t queue_size = 256;   // max queue size offered, power of 2
};

class NetDataPath;

class VirtioNet final : public VirtioDevice {
public:
    // Frames read ahead of the guest's buffers; bounds what the device holds when the guest
    // stops posting buffers (16 x 64 KiB).
    static constexpr uint16_t kRxSlots = 16;

    static Result<std::unique_ptr<VirtioNet>> create(VirtioNetOptions opts);
    // 52:54:00 (locally administered, unicast) + 3 bytes hashed from the tap name: stable
    // across restarts, so a guest keeps its address and DHCP lease.
    static MacAddress default_mac(std::string_view tap_name);
    ~VirtioNet() override;

    uint16_t device_type() const override { return net::kDeviceType; }
    uint64_t device_features() const override { return features_; }
    uint16_t num_queues() const override { return 3; }
    uint16_t max_queue_size() const override { return queue_size_; }
    void read_config(uint64_t offset, std::span<uint8_t> data) override;
    void write_config(uint64_t offset, std::span<const uint8_t> data) override;
    Result<void> activate(ActivateContext ctx) override;
    void queue_notify(uint16_t index) override;
    void reset() override;
    bool needs_reset() const override;
    // TX frames the tap has taken complete; RX chains popped and not filled are handed back.
    // Frames read from the tap but not yet delivered are not in a snapshot (lost, as on a
    // wire). Refused while a TX write is still in the tap's io_uring.
    Result<QueuePositions> settle_queues() override;

    const NetMetrics& metrics() const { return *metrics_; }
    void visit_metrics(MetricVisitor& v) const override {
        metrics().visit(v);
        rx_limiter_->visit_metrics(v, "rx_rate_limiter");
        tx_limiter_->visit_metrics(v, "tx_rate_limiter");
    }
    // Set at configuration and by PATCH /network-interfaces at run time (any thread).
    RateLimiter& rx_rate_limiter() const { return *rx_limiter_; }
    RateLimiter& tx_rate_limiter() const { return *tx_limiter_; }
    MacAddress mac() const;
    const std::string& tap_name() const { return tap_name_; }
    int tap_fd() const { return tap_ ? tap_->fd() : -1; }  // -1 while detached
    bool tap_attached() const { return tap_.has_value(); }

    // A live migration hands the tap over (a tap without multi_queue takes one user): the
    // source detaches it once the paused VM's state is taken, the destination attaches it
    // just before loading that state, and a failed migration attaches it again at the
    // source. Detached, the device has no data path; frames for the guest wait in the tap
    // or, with nobody attached, the host drops them, as a wire would.
    // detach_tap: paused VM only (it settles the queues, see settle_queues); closes the tap.
    Result<void> detach_tap();
    // Attaches `tap`; a device that was active when detached carries on where it stopped.
    Result<void> attach_tap(Tap tap);
    // After a live migration: tells the network where the guest's MAC is now. A driver that
    // negotiated VIRTIO_NET_F_GUEST_ANNOUNCE is asked to announce itself (status bit and
    // config interrupt, see above); otherwise, as QEMU's qemu_announce_self does for such a
    // NIC, `count` broadcast RARP frames (RFC 903, opcode 3) from the guest's MAC go to the tap.
    Result<void> announce(int count = 3);

private:
    VirtioNet(std::optional<Tap> tap, std::string tap_name, MacAddress mac, uint16_t queue_size,
              std::shared_ptr<RateLimiter> rx, std::shared_ptr<RateLimiter> tx);
    // Tears the data path down (reset and detach_tap); false if the kernel kept its buffers.
    bool stop_path(std::shared_ptr<NetDataPath> p, EventRegistry* events);
    // Serves the control queue's available commands (event loop); true: interrupt the driver.
    bool serve_ctrl_locked();
    uint8_t ctrl_command_locked(const DescriptorChain& chain);

    // What activate() was given, for attach_tap to activate again (queue positions then set).
    struct Activation {
        GuestMemory* mem;
        VirtioInterrupt* irq;
        EventRegistry* events;
        uint64_t acked;
        std::vector<QueueConfig> queues;
    };

    std::optional<Tap> tap_;  // nullopt while detached (or not yet attached)
    std::string tap_name_;
    uint16_t queue_size_;
    uint64_t features_;
    net::Config config_{};
    std::shared_ptr<NetMetrics> metrics_;
    std::shared_ptr<std::atomic<bool>> needs_reset_;
    std::shared_ptr<RateLimiter> rx_limiter_, tx_limiter_;  // unlimited until told otherwise

    // guards path_, events_, activation_, ctrl_ and config_.status (read_config reads it on
    // vCPU threads while announce() and the control queue change it)
    mutable std::mutex mu_;
    std::shared_ptr<NetDataPath> path_;
    std::optional<SplitQueue> ctrl_;  // while active with the control queue enabled
    EventRegistry* events_ = nullptr;
    std::optional<Activation> activation_;  // while active, and while detached after being active
};

}  // namespace kestrel
