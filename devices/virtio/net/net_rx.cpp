// Receive path of NetDataPath: frames read from the tap -> guest chains on receiveq1
// (virtio 1.2 §5.1.6.3, §5.1.6.4).
#include <algorithm>
#include <cstring>
#include <variant>

#include "devices/virtio/net/net_datapath.hpp"
#include "vmm/base/log.hpp"

namespace kestrel {

void NetDataPath::post_rx_reads() {
    if (!rx_.q || rx_.broken || rx_tap_failed_) return;
    if (rx_tap_empty_) {
        // One poll for an empty tap (see TapRing); it completes at once if a frame came in
        // since the read that found none.
        if (!rx_poll_posted_ && ring_.prep_poll_in(kRxPollTag)) rx_poll_posted_ = true;
        return;
    }
    for (size_t i = 0; i < rx_slots_.size(); ++i) {
        RxSlot& s = rx_slots_[i];
        if (s.state != RxState::Idle) continue;
        if (!ring_.prep_read(s.buf.get(), net::kMaxPacketBytes, kRxTag | i)) return;
        s.state = RxState::Posted;
    }
}

void NetDataPath::complete_rx(uint16_t slot_index, int32_t res) {
    RxSlot& s = rx_slots_[slot_index];
    s.state = RxState::Idle;
    if (res == -EAGAIN) {
        rx_tap_empty_ = true;
        return;
    }
    if (res == -EOPNOTSUPP) {
        // This kernel's tun does not take RWF_NOWAIT: let reads wait in the kernel instead.
        log::debug("virtio-net rx: tap reads without RWF_NOWAIT");
        ring_.disable_nowait_reads();
        return;
    }
    if (res == -ECANCELED || res == -EINTR) return;
    if (res < 0) {
        // EBADFD (tap detached) and the like do not go away: re-posting would spin.
        NetMetrics::inc(m().rx_tap_errors);
        if (!rx_tap_failed_) log::warn("virtio-net rx: tap read failed: {}; receiving stops until reset", std::strerror(-res));
        rx_tap_failed_ = true;
        return;
    }
    if (static_cast<uint32_t>(res) < net::kHdrBytes + net::kEthHeaderBytes) {
        NetMetrics::inc(m().rx_tap_errors);
        log::debug("virtio-net rx: runt read of {} bytes from the tap", res);
        return;
    }
    s.len = static_cast<uint32_t>(res);
    if (!sanitize_rx_header(s)) {
        NetMetrics::inc(m().rx_drops_bad_offload);
        return;
    }
    s.state = RxState::Ready;
    rx_ready_.push_back(slot_index);
}

void NetDataPath::complete_rx_poll(int32_t res) {
    rx_poll_posted_ = false;
    if (res == -ECANCELED) return;
    // Readable, or an error/hang-up that the next read reports as such.
    rx_tap_empty_ = false;
}

bool NetDataPath::sanitize_rx_header(RxSlot& f) const {
    net::NetHdr h;
    std::memcpy(&h, f.buf.get(), sizeof h);
    const uint8_t base = h.gso_type & ~net::kGsoEcn;
    if (!(acked_ & net::kFeatureGuestCsum)) {
        // §5.1.6.4.1: without GUEST_CSUM flags are zero (the tap may still say DATA_VALID),
        // and the tap, offloads off, never hands us super-frames.
        if (h.gso_type != net::kGsoNone) return false;
        h.flags = 0;
    } else {
        h.flags &= net::kHdrFNeedsCsum | net::kHdrFDataValid;
        if ((h.gso_type & net::kGsoEcn) && !(acked_ & net::kFeatureGuestEcn)) return false;
        if (base == net::kGsoTcpV4 && !(acked_ & net::kFeatureGuestTso4)) return false;
        if (base == net::kGsoTcpV6 && !(acked_ & net::kFeatureGuestTso6)) return false;
        if (base != net::kGsoNone && base != net::kGsoTcpV4 && base != net::kGsoTcpV6) return false;
    }
    h.num_buffers = 0;  // set at delivery
    std::memcpy(f.buf.get(), &h, sizeof h);
    return true;
}

std::optional<DescriptorChain> NetDataPath::next_rx_chain() {
    if (!rx_held_.empty()) {
        DescriptorChain c = std::move(rx_held_.front());
        rx_held_.pop_front();
        return c;
    }
    while (!rx_.broken) {
        auto popped = rx_.q->pop(*mem_);
        if (!popped) {
            mark_broken(rx_, net::kRxQueue, popped.error());
            return std::nullopt;
        }
        if (!*popped) return std::nullopt;
        if (auto* bad = std::get_if<MalformedChain>(&**popped)) {
            NetMetrics::inc(m().rx_malformed_chains);
            log::debug("virtio-net rx: malformed chain at head {}: {}", bad->head, bad->error.what());
            put_used(rx_, net::kRxQueue, bad->head, 0);
            continue;
        }
        auto& c = std::get<DescriptorChain>(**popped);
        // §5.1.6.3: receive buffers are device-writable only, each with room for the header
        // (a smaller one could not start a frame; refusing it also bounds num_buffers).
        if (c.readable_bytes() > 0 || c.writable_bytes() < net::kHdrBytes) {
            NetMetrics::inc(m().rx_malformed_chains);
            log::debug("virtio-net rx: head {}: {} readable, {} writable bytes", c.head(), c.readable_bytes(),
                       c.writable_bytes());
            put_used(rx_, net::kRxQueue, c.head(), 0);
            continue;
        }
        return std::move(c);
    }
    return std::nullopt;
}

namespace {
void set_num_buffers(uint8_t* frame, uint16_t n) {
    std::memcpy(frame + offsetof(net::NetHdr, num_buffers), &n, sizeof n);
}
}  // namespace

bool NetDataPath::deliver_single(RxSlot& f) {
    while (true) {
        auto c = next_rx_chain();
        if (!c) return false;
        if (c->writable_bytes() < f.len) {
            // §5.1.6.3.1: without MRG_RXBUF a frame takes exactly one chain. Drop the frame,
            // keep the chain for the next one.
            NetMetrics::inc(m().rx_drops_too_big);
            log::debug("virtio-net rx: {}-byte frame does not fit a {}-byte buffer", f.len, c->writable_bytes());
            rx_held_.push_front(std::move(*c));
            return true;
        }
        set_num_buffers(f.buf.get(), 1);  // §5.1.6.4: 1 when MRG_RXBUF is not negotiated
        auto w = c->write_from(*mem_, std::span<const uint8_t>(f.buf.get(), f.len));
        if (!w || *w != f.len) {
            NetMetrics::inc(m().rx_malformed_chains);
            put_used(rx_, net::kRxQueue, c->head(), 0);
            continue;
        }
        put_used(rx_, net::kRxQueue, c->head(), f.len);
        count_delivered(f, 1);
        return true;
    }
}

bool NetDataPath::deliver_merged(RxSlot& f) {
    std::vector<DescriptorChain> chains;
    uint64_t room = 0;
    while (room < f.len) {
        auto c = next_rx_chain();
        if (!c) {
            // Not enough buffers for the whole frame: hand nothing over (a frame is never
            // split across a stall), keep the chains, in order, for when more arrive.
            for (auto it = chains.rbegin(); it != chains.rend(); ++it) rx_held_.push_front(std::move(*it));
            return false;
        }
        room += c->writable_bytes();
        chains.push_back(std::move(*c));
    }
    // Every chain holds >= 12 bytes and a frame <= 65562, so this fits 16 bits.
    set_num_buffers(f.buf.get(), static_cast<uint16_t>(chains.size()));
    uint32_t off = 0;
    for (auto& c : chains) {
        uint32_t n = static_cast<uint32_t>(std::min<uint64_t>(c.writable_bytes(), f.len - off));
        auto w = c.write_from(*mem_, std::span<const uint8_t>(f.buf.get() + off, n));
        if (!w || *w != n) NetMetrics::inc(m().rx_malformed_chains);
        put_used(rx_, net::kRxQueue, c.head(), w ? static_cast<uint32_t>(*w) : 0);
        off += n;
    }
    count_delivered(f, chains.size());
    return true;
}

void NetDataPath::count_delivered(const RxSlot& f, size_t buffers) {
    NetMetrics::inc(m().rx_packets);
    NetMetrics::inc(m().rx_bytes, f.len - net::kHdrBytes);
    NetMetrics::inc(m().rx_buffers_used, buffers);
    if ((f.buf[offsetof(net::NetHdr, gso_type)] & ~net::kGsoEcn) != net::kGsoNone)
        NetMetrics::inc(m().rx_gso_packets);
    rx_delivered_ = true;
}

void NetDataPath::deliver_rx() {
    while (!rx_ready_.empty() && rx_.q && !rx_.broken) {
        RxSlot& f = rx_slots_[rx_ready_.front()];
        // One op and the frame's bytes per frame, before it reaches the guest. Refused: the
        // frames wait in their slots and, once those are full, in the tap (as Firecracker
        // leaves them in the tap); the limiter's timer resumes delivery.
        const uint64_t bytes = f.len - net::kHdrBytes;
        if (!rx_limiter_->consume(1, bytes)) return;
        if (!(mrg_ ? deliver_merged(f) : deliver_single(f))) {
            rx_limiter_->give_back(1, bytes);  // nothing was delivered
            if (!rx_stalled_) {
                rx_stalled_ = true;
                NetMetrics::inc(m().rx_stalls);
            }
            return;
        }
        f.state = RxState::Idle;
        rx_ready_.pop_front();
    }
}

}  // namespace kestrel
