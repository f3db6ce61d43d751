#include "devices/virtio/net/net_datapath.hpp"

#include <unistd.h>

#include <chrono>

#include "vmm/base/log.hpp"

namespace kestrel {

namespace {
// Work rounds per wake-up: keeps one busy tap from monopolising the event loop. Anything
// left is announced by the ring's eventfd again (cleared before the first reap).
constexpr int kMaxRounds = 16;
// How long reset waits for the kernel to give back cancelled requests.
constexpr std::chrono::milliseconds kQuiesceLimit{5000};
}  // namespace

Result<std::shared_ptr<NetDataPath>> NetDataPath::create(int tap_fd, Setup s) {
    unsigned tx_size = s.tx ? s.tx->size() : 0;
    auto ring = TapRing::create(tap_fd, tx_size + s.rx_slots);
    if (!ring) return std::unexpected(ring.error());
    return std::shared_ptr<NetDataPath>(new NetDataPath(std::move(*ring), std::move(s)));
}

NetDataPath::NetDataPath(TapRing ring, Setup s)
    : mem_(s.mem), irq_(s.irq), metrics_(std::move(s.metrics)), needs_reset_(std::move(s.needs_reset)),
      acked_(s.acked), mrg_((s.acked & net::kFeatureMrgRxbuf) != 0), ring_(std::move(ring)),
      rx_limiter_(std::move(s.rx_limiter)), tx_limiter_(std::move(s.tx_limiter)) {
    rx_.q = std::move(s.rx);
    tx_.q = std::move(s.tx);
    if (tx_.q) {
        tx_slots_.resize(tx_.q->size());
        for (uint32_t i = tx_.q->size(); i > 0; --i) tx_free_.push_back(static_cast<uint16_t>(i - 1));
    }
    if (rx_.q) {
        rx_slots_.resize(s.rx_slots);
        for (auto& slot : rx_slots_) slot.buf = std::make_unique<uint8_t[]>(net::kMaxPacketBytes);
    }
}

void NetDataPath::wake() {
    uint64_t one = 1;
    if (::write(ring_.event_fd(), &one, sizeof one) != sizeof one)
        log::warn("virtio-net: cannot wake the event loop: {}", std::strerror(errno));
}

void NetDataPath::on_notify(uint16_t queue) {
    bool rx_irq, tx_irq;
    {
        std::lock_guard lk(mu_);
        if (!active_) return;
        if (queue == net::kRxQueue) rx_stalled_ = false;  // the driver added buffers
        pump(queue == net::kTxQueue);
        rx_irq = take_notify(rx_);
        tx_irq = take_notify(tx_);
    }
    raise(rx_irq, tx_irq);
}

void NetDataPath::on_event() {
    bool rx_irq, tx_irq;
    {
        std::lock_guard lk(mu_);
        if (!active_) {
            ring_.clear_event();  // reset quiesces the ring; only keep epoll quiet
            return;
        }
        pump(false);
        rx_irq = take_notify(rx_);
        tx_irq = take_notify(tx_);
    }
    raise(rx_irq, tx_irq);
}

void NetDataPath::on_limiter_timer(uint16_t queue) {
    bool rx_irq, tx_irq;
    {
        std::lock_guard lk(mu_);
        (queue == net::kTxQueue ? tx_limiter_ : rx_limiter_)->on_timer();
        if (!active_) return;
        pump(queue == net::kTxQueue);  // RX: pump() delivers the frames that wait
        rx_irq = take_notify(rx_);
        tx_irq = take_notify(tx_);
    }
    raise(rx_irq, tx_irq);
}

void NetDataPath::pump(bool tx_kick) {
    // Before reaping: a completion posted after this point signals the eventfd again.
    ring_.clear_event();
    rx_delivered_ = false;
    for (int round = 0; round < kMaxRounds; ++round) {
        unsigned done = ring_.reap([this](uint64_t tag, int32_t res) { on_completion(tag, res); });
        if (tx_kick || tx_starved_) {
            tx_kick = false;
            pop_tx();
        }
        deliver_rx();
        post_rx_reads();
        if (ring_.prepared() == 0 && done == 0) break;
        if (tx_prepared_ > 0) {
            NetMetrics::inc(m().tx_batches);
            tx_prepared_ = 0;
        }
        int r = ring_.submit();
        if (r < 0) log::warn("virtio-net: io_uring_submit: {}", std::strerror(-r));
    }
    if (rx_delivered_) NetMetrics::inc(m().rx_batches);
}

void NetDataPath::on_completion(uint64_t tag, int32_t res) {
    if (tag == kRxPollTag) {
        complete_rx_poll(res);
    } else if (tag & kRxTag) {
        uint64_t slot = tag & ~kRxTag;
        if (slot < rx_slots_.size()) complete_rx(static_cast<uint16_t>(slot), res);
    } else if (tag < tx_slots_.size()) {
        complete_tx(static_cast<uint16_t>(tag), res);
    }
}

void NetDataPath::mark_broken(QueueSide& s, uint16_t qi, const Error& e) {
    if (!s.broken) log::warn("virtio-net queue {}: {}; device needs reset", qi, e.what());
    s.broken = true;
    NetMetrics::inc(m().queue_errors);
    needs_reset_->store(true);
}

void NetDataPath::put_used(QueueSide& s, uint16_t qi, uint16_t head, uint32_t len) {
    if (s.broken) return;
    if (auto r = s.q->add_used(*mem_, head, len); !r) return mark_broken(s, qi, r.error());
    s.used_added = true;
}

bool NetDataPath::take_notify(QueueSide& s) {
    if (!s.used_added || s.broken || !s.q) return false;
    s.used_added = false;
    auto n = s.q->should_notify(*mem_);
    if (!n) {
        mark_broken(s, &s == &rx_ ? net::kRxQueue : net::kTxQueue, n.error());
        return false;
    }
    return *n;
}

void NetDataPath::raise(bool rx, bool tx) {
    if (rx) {
        NetMetrics::inc(m().interrupts);
        irq_->signal_queue(net::kRxQueue);
    }
    if (tx) {
        NetMetrics::inc(m().interrupts);
        irq_->signal_queue(net::kTxQueue);
    }
}

Result<QueuePositions> NetDataPath::settle() {
    QueuePositions out(2);
    bool rx_n = false, tx_n = false;
    {
        std::lock_guard lk(mu_);
        // Completions only: nothing is popped, sent or posted while the VM is paused. The
        // eventfd stays signalled, so the loop looks again on resume.
        ring_.reap([this](uint64_t tag, int32_t res) { on_completion(tag, res); });
        // RX chains are filled in the order they were popped, so the held ones are the last.
        if (rx_.q) {
            auto pos = rx_.q->position(static_cast<uint16_t>(rx_held_.size()));
            if (!pos) return std::unexpected(context(pos.error(), "virtio-net receiveq"));
            out[net::kRxQueue] = *pos;
        }
        if (tx_.q) {
            auto pos = tx_.q->position(tx_throttled_ ? 1 : 0);
            if (!pos) return std::unexpected(context(pos.error(), "virtio-net transmitq (frames still going to the tap)"));
            out[net::kTxQueue] = *pos;
        }
        rx_n = take_notify(rx_);
        tx_n = take_notify(tx_);
    }
    raise(rx_n, tx_n);
    return out;
}

void NetDataPath::deactivate() {
    std::lock_guard lk(mu_);
    active_ = false;
}

bool NetDataPath::quiesce() {
    std::lock_guard lk(mu_);
    bool ok = ring_.quiesce(kQuiesceLimit);
    rx_ready_.clear();
    rx_held_.clear();
    tx_throttled_.reset();
    tx_free_.clear();
    rx_.q.reset();
    tx_.q.reset();
    return ok;
}

}  // namespace kestrel
