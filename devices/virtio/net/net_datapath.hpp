// NetDataPath: everything one activation of a VirtioNet uses to move frames — the two split
// queues, the tap's io_uring, TX slots and RX frame buffers — and the TX/RX logic itself
// (net_tx.cpp, net_rx.cpp). Internal to VirtioNet; see virtio_net.hpp for the design.
// Every entry point takes `mu`; interrupts are raised after it is released.
#pragma once

#include <sys/uio.h>

#include <atomic>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <vector>

#include "devices/rate_limiter.hpp"
#include "devices/virtio/net/net_metrics.hpp"
#include "devices/virtio/net/net_spec.hpp"
#include "devices/virtio/net/tap_ring.hpp"
#include "devices/virtio/queue/split_queue.hpp"
#include "devices/virtio/virtio_device.hpp"

namespace kestrel {

class NetDataPath {
public:
    struct Setup {
        GuestMemory* mem;
        VirtioInterrupt* irq;
        std::shared_ptr<NetMetrics> metrics;
        std::shared_ptr<std::atomic<bool>> needs_reset;
        uint64_t acked;
        std::optional<SplitQueue> rx, tx;  // nullopt: the driver did not enable that queue
        uint16_t rx_slots;
        std::shared_ptr<RateLimiter> rx_limiter, tx_limiter;  // the device's, never null
    };
    static Result<std::shared_ptr<NetDataPath>> create(int tap_fd, Setup s);

    int event_fd() const { return ring_.event_fd(); }
    // Makes the event loop call on_event() soon (first RX reads are posted from there).
    void wake();

    void on_notify(uint16_t queue);
    void on_event();
    // A rate limiter's timer fired: the side it held up (RX or TX queue) tries again.
    void on_limiter_timer(uint16_t queue);
    // Stops all work: later callbacks do nothing. Then quiesce() (after the eventfd left the
    // registry) cancels and waits for the ring; false if the kernel did not let go in time.
    void deactivate();
    bool quiesce();
    // VirtioDevice::settle_queues for this activation (paused VM, event loop parked).
    Result<QueuePositions> settle();

private:
    // io_uring tags: TX slot index, kRxTag | RX slot index, or kRxPollTag.
    static constexpr uint64_t kRxTag = 1ull << 32;
    static constexpr uint64_t kRxPollTag = 1ull << 33;

    struct TxSlot {
        uint16_t head = 0;
        uint32_t frame_len = 0;
        net::NetHdr hdr{};         // the validated copy that goes to the tap (read once)
        std::vector<iovec> iov;    // [0] = hdr, then the guest's frame bytes
    };
    enum class RxState : uint8_t { Idle, Posted, Ready };
    struct RxSlot {
        std::unique_ptr<uint8_t[]> buf;  // net::kMaxPacketBytes
        uint32_t len = 0;
        RxState state = RxState::Idle;
    };
    struct QueueSide {
        std::optional<SplitQueue> q;
        bool broken = false;
        bool used_added = false;  // used ring moved since the last should_notify
    };

    NetDataPath(TapRing ring, Setup s);

    // One round of work: reap completions, pop TX if asked, deliver frames, post reads,
    // submit; repeated while it makes progress (bounded).
    void pump(bool tx_kick);
    void on_completion(uint64_t tag, int32_t res);
    // True when queue side `s` (index `qi`) should interrupt the driver now.
    bool take_notify(QueueSide& s);
    void raise(bool rx, bool tx);
    void mark_broken(QueueSide& s, uint16_t qi, const Error& e);
    void put_used(QueueSide& s, uint16_t qi, uint16_t head, uint32_t len);

    // TX (net_tx.cpp)
    void pop_tx();
    void start_tx(DescriptorChain chain);
    void complete_tx(uint16_t slot, int32_t res);
    bool tx_header_ok(const net::NetHdr& h) const;

    // RX (net_rx.cpp)
    void post_rx_reads();
    void complete_rx(uint16_t slot, int32_t res);
    void complete_rx_poll(int32_t res);
    void deliver_rx();
    // Next usable guest RX chain (held ones first); nullopt when the driver has none.
    std::optional<DescriptorChain> next_rx_chain();
    // Each returns false when the guest ran out of buffers (nothing consumed then).
    bool deliver_single(RxSlot& f);
    bool deliver_merged(RxSlot& f);
    bool sanitize_rx_header(RxSlot& f) const;
    void count_delivered(const RxSlot& f, size_t buffers);

    NetMetrics& m() { return *metrics_; }

    std::mutex mu_;
    bool active_ = true;
    GuestMemory* mem_;
    VirtioInterrupt* irq_;
    std::shared_ptr<NetMetrics> metrics_;
    std::shared_ptr<std::atomic<bool>> needs_reset_;
    uint64_t acked_;
    bool mrg_;
    TapRing ring_;

    QueueSide rx_, tx_;
    std::vector<TxSlot> tx_slots_;
    std::vector<uint16_t> tx_free_;
    bool tx_starved_ = false;   // stopped popping with every slot busy
    std::optional<DescriptorChain> tx_throttled_;  // refused by the TX limiter: sent first
    std::shared_ptr<RateLimiter> rx_limiter_, tx_limiter_;
    uint32_t tx_prepared_ = 0;  // TX SQEs since the last submit

    std::vector<RxSlot> rx_slots_;
    std::deque<uint16_t> rx_ready_;             // slots holding frames, in tap order
    std::deque<DescriptorChain> rx_held_;        // popped guest chains not used yet
    bool rx_stalled_ = false;
    bool rx_delivered_ = false;                  // this pump delivered a frame
    bool tap_down_warned_ = false;
    bool rx_tap_failed_ = false;                 // a read failed for good: stop posting
    bool rx_tap_empty_ = false;                  // a read found no frame: poll before reading again
    bool rx_poll_posted_ = false;
};

}  // namespace kestrel
