// Transmit path of NetDataPath: guest chains on transmitq1 -> writev on the tap (virtio 1.2
// §5.1.6.2).
#include <climits>
#include <cstring>
#include <variant>

#include "devices/virtio/net/net_datapath.hpp"
#include "vmm/base/log.hpp"

namespace kestrel {

bool NetDataPath::tx_header_ok(const net::NetHdr& h) const {
    // §5.1.6.2.1: the driver sets only NEEDS_CSUM on transmit, and only offloads it negotiated.
    if (h.flags & ~net::kHdrFNeedsCsum) return false;
    if ((h.flags & net::kHdrFNeedsCsum) && !(acked_ & net::kFeatureCsum)) return false;
    if ((h.gso_type & net::kGsoEcn) && !(acked_ & net::kFeatureHostEcn)) return false;
    switch (h.gso_type & ~net::kGsoEcn) {
    case net::kGsoNone: return (h.gso_type & net::kGsoEcn) == 0;
    case net::kGsoTcpV4: return (acked_ & net::kFeatureHostTso4) != 0;
    case net::kGsoTcpV6: return (acked_ & net::kFeatureHostTso6) != 0;
    default: return false;  // UFO / USO are not offered
    }
}

void NetDataPath::pop_tx() {
    tx_starved_ = false;
    while (tx_.q && !tx_.broken) {
        if (tx_free_.empty()) {
            tx_starved_ = true;  // every slot in flight: resume when completions free one
            return;
        }
        std::optional<DescriptorChain> chain;
        if (tx_throttled_) {
            chain.swap(tx_throttled_);
        } else {
            auto popped = tx_.q->pop(*mem_);
            if (!popped) return mark_broken(tx_, net::kTxQueue, popped.error());
            if (!*popped) return;
            if (auto* bad = std::get_if<MalformedChain>(&**popped)) {
                NetMetrics::inc(m().tx_malformed_chains);
                log::debug("virtio-net tx: malformed chain at head {}: {}", bad->head, bad->error.what());
                put_used(tx_, net::kTxQueue, bad->head, 0);
                continue;
            }
            chain.emplace(std::move(std::get<DescriptorChain>(**popped)));
        }
        // One op and the frame's bytes (without the virtio-net header) per frame, before it
        // is sent. Refused: the chain waits, the queue stops, the limiter's timer resumes it.
        const uint64_t len = chain->readable_bytes();
        if (!tx_limiter_->consume(1, len > net::kHdrBytes ? len - net::kHdrBytes : 0)) {
            tx_throttled_.swap(chain);
            return;
        }
        start_tx(std::move(*chain));
    }
}

void NetDataPath::start_tx(DescriptorChain chain) {
    const uint16_t head = chain.head();
    // Any device-writable part of a transmit chain is ignored (nothing is written back).
    const uint64_t total = chain.readable_bytes();
    if (total < net::kHdrBytes + net::kEthHeaderBytes || total > net::kMaxPacketBytes) {
        NetMetrics::inc(m().tx_bad_length);
        log::debug("virtio-net tx: head {}: {} bytes (header + frame must be {}..{})", head, total,
                   net::kHdrBytes + net::kEthHeaderBytes, net::kMaxPacketBytes);
        return put_used(tx_, net::kTxQueue, head, 0);
    }
    uint16_t slot_index = tx_free_.back();
    TxSlot& slot = tx_slots_[slot_index];
    // The header is read once into the slot; the tap gets this validated copy, not guest
    // memory the driver could rewrite between our check and the kernel's read.
    auto got = chain.read_to(*mem_, std::span(reinterpret_cast<uint8_t*>(&slot.hdr), net::kHdrBytes));
    if (!got || *got != net::kHdrBytes) {
        NetMetrics::inc(m().tx_malformed_chains);
        return put_used(tx_, net::kTxQueue, head, 0);
    }
    if (!tx_header_ok(slot.hdr)) {
        NetMetrics::inc(m().tx_bad_header);
        log::debug("virtio-net tx: head {}: header flags {:#x} gso_type {:#x} not allowed by features {:#x}", head,
                   slot.hdr.flags, slot.hdr.gso_type, acked_);
        return put_used(tx_, net::kTxQueue, head, 0);
    }
    slot.hdr.num_buffers = 0;  // §5.1.6.2: unused on transmit
    slot.iov.clear();
    slot.iov.push_back(iovec{&slot.hdr, net::kHdrBytes});
    auto frame = chain.append_readable_iovecs(*mem_, net::kHdrBytes, total - net::kHdrBytes, slot.iov);
    if (!frame || slot.iov.size() > IOV_MAX) {
        // Linux sends at most MAX_SKB_FRAGS + 2 pieces; more than IOV_MAX is not a real frame.
        NetMetrics::inc(m().tx_malformed_chains);
        return put_used(tx_, net::kTxQueue, head, 0);
    }
    slot.head = head;
    slot.frame_len = static_cast<uint32_t>(total - net::kHdrBytes);
    if (!ring_.prep_writev(slot.iov.data(), static_cast<unsigned>(slot.iov.size()), slot_index)) {
        // Cannot happen (the ring has a slot per descriptor); never lose the chain regardless.
        log::warn("virtio-net tx: io_uring submission queue full");
        NetMetrics::inc(m().tx_tap_errors);
        return put_used(tx_, net::kTxQueue, head, 0);
    }
    tx_free_.pop_back();
    tx_prepared_++;
}

void NetDataPath::complete_tx(uint16_t slot_index, int32_t res) {
    TxSlot& slot = tx_slots_[slot_index];
    tx_free_.push_back(slot_index);
    if (res < 0) {
        NetMetrics::inc(m().tx_tap_errors);
        if (res == -EIO && !tap_down_warned_) {
            tap_down_warned_ = true;
            log::warn("virtio-net: tap refuses frames (EIO): is the interface up?");
        } else {
            log::debug("virtio-net tx: head {}: tap write: {}", slot.head, std::strerror(-res));
        }
    } else {
        NetMetrics::inc(m().tx_packets);
        NetMetrics::inc(m().tx_bytes, slot.frame_len);
        if ((slot.hdr.gso_type & ~net::kGsoEcn) != net::kGsoNone) NetMetrics::inc(m().tx_gso_packets);
        if (slot.hdr.flags & net::kHdrFNeedsCsum) NetMetrics::inc(m().tx_csum_offloaded);
    }
    put_used(tx_, net::kTxQueue, slot.head, 0);
}

}  // namespace kestrel
