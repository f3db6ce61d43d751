#include "devices/virtio/queue/split_queue.hpp"

#include <atomic>
#include <bit>

#include "devices/virtio/queue/virtq_spec.hpp"

namespace kestrel {

namespace {

Result<void> check_size(uint16_t size, uint16_t max_size) {
    if (size == 0 || !std::has_single_bit(size) || size > max_size || size > virtq::kMaxQueueSize)
        return fail("queue size {} is not a power of two in 1..{}", size,
                    std::min<uint16_t>(max_size, virtq::kMaxQueueSize));
    return {};
}

}  // namespace

Result<void> SplitQueue::check_layout(const GuestMemory& mem, const SplitQueueState& st) {
    TRY(check_size(st.size, virtq::kMaxQueueSize));
    if (st.desc % virtq::kDescAlign || st.avail % virtq::kAvailAlign || st.used % virtq::kUsedAlign)
        return fail("queue rings misaligned: desc {:#x} (16), avail {:#x} (2), used {:#x} (4) "
                    "(virtio 1.2 §2.7)", st.desc, st.avail, st.used);
    uint64_t desc_bytes = uint64_t{st.size} * sizeof(virtq::Desc);
    if (!mem.slice(GuestAddress(st.desc), desc_bytes))
        return fail("descriptor table {:#x}+{:#x} is outside guest RAM", st.desc, desc_bytes);
    uint64_t avail_bytes = virtq::avail_bytes(st.size, st.event_idx);
    if (!mem.slice(GuestAddress(st.avail), avail_bytes))
        return fail("available ring {:#x}+{:#x} is outside guest RAM", st.avail, avail_bytes);
    uint64_t used_bytes = virtq::used_bytes(st.size, st.event_idx);
    if (!mem.slice(GuestAddress(st.used), used_bytes))
        return fail("used ring {:#x}+{:#x} is outside guest RAM", st.used, used_bytes);
    return {};
}

Result<SplitQueue> SplitQueue::create(const GuestMemory& mem, const QueueConfig& cfg,
                                      uint16_t max_size, uint64_t acked_features) {
    if (!cfg.ready) return fail("queue is not enabled");
    TRY(check_size(cfg.size, max_size));
    SplitQueueState st;
    st.size = cfg.size;
    st.desc = cfg.desc.raw;
    st.avail = cfg.avail.raw;
    st.used = cfg.used.raw;
    st.event_idx = acked_features & virtq::kFeatureEventIdx;
    st.indirect = acked_features & virtq::kFeatureIndirectDesc;
    if (cfg.position) {
        // Nothing was in flight when it was saved; the driver's avail idx is checked against
        // next_avail by pop() like any other.
        st.next_avail = st.next_used = cfg.position->next_avail;
        st.signalled_used = cfg.position->signalled_used;
        st.signalled_used_valid = cfg.position->signalled_used_valid;
    }
    TRY(check_layout(mem, st));
    return SplitQueue(st);
}

Result<SplitQueue> SplitQueue::restore(const GuestMemory& mem, const SplitQueueState& st) {
    TRY(check_layout(mem, st));
    if (static_cast<uint16_t>(st.next_avail - st.next_used) > st.size)
        return fail("queue state has {} chains in flight, more than its size {}",
                    static_cast<uint16_t>(st.next_avail - st.next_used), st.size);
    return SplitQueue(st);
}

SplitQueueState SplitQueue::state() const { return st_; }

Result<QueuePosition> SplitQueue::position(uint16_t unstarted) const {
    if (in_flight() != unstarted)
        return fail("{} request(s) in flight, {} of them not started", in_flight(), unstarted);
    return QueuePosition{.next_avail = static_cast<uint16_t>(st_.next_avail - unstarted),
                         .signalled_used = st_.signalled_used,
                         .signalled_used_valid = st_.signalled_used_valid};
}

Result<uint16_t> SplitQueue::read_avail_idx(const GuestMemory& mem) const {
    auto idx = TRY(mem.read_obj<uint16_t>(GuestAddress(st_.avail + virtq::kAvailIdxOffset)));
    // Pairs with the driver's write barrier before it bumps idx (§2.7.13): ring entries and
    // descriptors read after this are at least as new as idx.
    std::atomic_thread_fence(std::memory_order_acquire);
    return idx;
}

Result<void> SplitQueue::publish_avail_event(GuestMemory& mem, uint16_t value) {
    return mem.write_obj(GuestAddress(st_.used + virtq::used_avail_event_offset(st_.size)), value);
}

Result<std::optional<PoppedChain>> SplitQueue::pop(GuestMemory& mem) {
    uint16_t avail_idx = TRY(read_avail_idx(mem));
    uint16_t pending = static_cast<uint16_t>(avail_idx - st_.next_avail);
    if (pending == 0 && st_.event_idx) {
        // Going idle: ask for a notification when the driver adds entry next_avail (§2.7.10),
        // then look again. Without the re-check, a buffer added after our first read but
        // before the driver saw the new avail_event would sit there unnoticed. The full
        // fence orders our avail_event store before the idx load (the driver does the
        // mirror image: idx store, full barrier, avail_event load).
        TRY(publish_avail_event(mem, st_.next_avail));
        std::atomic_thread_fence(std::memory_order_seq_cst);
        avail_idx = TRY(read_avail_idx(mem));
        pending = static_cast<uint16_t>(avail_idx - st_.next_avail);
    }
    if (pending == 0) return std::nullopt;
    // §2.7.6: at most `size` entries can be outstanding; anything else is a driver that
    // moved idx arbitrarily, and no entry in the ring can be trusted any more.
    if (pending > st_.size)
        return fail("avail idx {} is {} entries ahead of the device's {} (queue size {})",
                    avail_idx, pending, st_.next_avail, st_.size);

    uint64_t slot = st_.next_avail % st_.size;
    uint16_t head = TRY(mem.read_obj<uint16_t>(
        GuestAddress(st_.avail + virtq::kAvailRingOffset + 2 * slot)));
    // An out-of-range head cannot even be returned on the used ring (the driver would take
    // the id as garbage), so the queue is unusable.
    if (head >= st_.size)
        return fail("avail ring slot {} holds head {} >= queue size {}", slot, head, st_.size);
    ++st_.next_avail;

    auto chain = DescriptorChain::parse(mem, GuestAddress(st_.desc), st_.size, head,
                                        st_.indirect);
    if (!chain) return PoppedChain(MalformedChain{head, std::move(chain).error()});
    return PoppedChain(std::move(*chain));
}

Result<void> SplitQueue::add_used(GuestMemory& mem, uint16_t head, uint32_t written_len) {
    if (head >= st_.size) return fail("add_used: head {} >= queue size {}", head, st_.size);
    // More completions than pops would push used idx past avail idx: a device bug, and the
    // driver would treat the extra entries as garbage.
    if (in_flight() == 0) return fail("add_used: head {} but no chain is in flight", head);
    uint64_t slot = st_.next_used % st_.size;
    TRY(mem.write_obj(GuestAddress(st_.used + virtq::kUsedRingOffset + 8 * slot),
                      virtq::UsedElem{head, written_len}));
    uint16_t new_idx = static_cast<uint16_t>(st_.next_used + 1);
    // §2.7.8: the element (and the buffer contents) must be visible before the idx that
    // exposes them.
    std::atomic_thread_fence(std::memory_order_release);
    TRY(mem.write_obj(GuestAddress(st_.used + virtq::kUsedIdxOffset), new_idx));
    st_.next_used = new_idx;
    return {};
}

Result<bool> SplitQueue::should_notify(GuestMemory& mem) {
    // Our used idx store must be visible before we read the driver's suppression fields;
    // the driver re-checks used idx after writing them (Linux virtqueue_enable_cb), so one
    // side always sees the other.
    std::atomic_thread_fence(std::memory_order_seq_cst);
    if (!st_.event_idx) {
        uint16_t flags =
            TRY(mem.read_obj<uint16_t>(GuestAddress(st_.avail + virtq::kAvailFlagsOffset)));
        return !(flags & virtq::kAvailFNoInterrupt);
    }
    uint16_t used_event = TRY(mem.read_obj<uint16_t>(
        GuestAddress(st_.avail + virtq::avail_used_event_offset(st_.size))));
    uint16_t old_idx = st_.signalled_used;
    bool valid = st_.signalled_used_valid;
    st_.signalled_used = st_.next_used;
    st_.signalled_used_valid = true;
    // First check after (re)start: we do not know what the driver last saw, so tell it.
    if (!valid) return true;
    return virtq::need_event(used_event, st_.next_used, old_idx);
}

}  // namespace kestrel
