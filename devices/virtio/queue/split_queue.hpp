// SplitQueue: the device side of one split virtqueue (virtio 1.2 §2.7): takes chains off the
// available ring, puts completions on the used ring, and decides when the driver needs a
// used-buffer notification (§2.7.7, VIRTIO_F_EVENT_IDX). Not thread-safe: the owning
// device serialises calls (one event-loop thread, or under the device's lock).
//
// Ring indices are free-running 16-bit counters (§2.7.6, §2.7.8); slots are index % size.
#pragma once

#include <cstdint>
#include <optional>
#include <variant>

#include "devices/virtio/queue/descriptor_chain.hpp"
#include "devices/virtio/virtio_device.hpp"
#include "vmm/base/error.hpp"
#include "vmm/memory/guest_memory.hpp"

namespace kestrel {

// A head the driver made available whose chain broke a rule of §2.7.4/§2.7.5. The head is
// consumed: the device MUST still complete it, with add_used(head, 0), so the driver gets
// its descriptors back; then it carries on with the next chain.
struct MalformedChain {
    uint16_t head;
    Error error;
};

// What pop() found at the front of the available ring.
using PoppedChain = std::variant<DescriptorChain, MalformedChain>;

// Everything needed to rebuild a SplitQueue (snapshot / migration); plain data.
struct SplitQueueState {
    uint16_t size = 0;
    uint64_t desc = 0, avail = 0, used = 0;  // guest-physical ring addresses
    uint16_t next_avail = 0;      // next avail ring index to pop
    uint16_t next_used = 0;       // next used ring index to fill (== used->idx we published)
    uint16_t signalled_used = 0;  // used idx at the last should_notify() check
    bool signalled_used_valid = false;
    bool event_idx = false;       // VIRTIO_F_EVENT_IDX negotiated
    bool indirect = false;        // VIRTIO_F_INDIRECT_DESC negotiated

    bool operator==(const SplitQueueState&) const = default;
};

class SplitQueue {
public:
    // Checks (virtio 1.2 §2.7): queue enabled; size a power of two, 1..min(max_size, 32768);
    // desc 16-, avail 2-, used 4-byte aligned; each ring, at its full size for `size` (incl.
    // used_event / avail_event when VIRTIO_F_EVENT_IDX is in acked_features), inside guest RAM.
    // With cfg.position (a restored device) the indices continue from there.
    static Result<SplitQueue> create(const GuestMemory& mem, const QueueConfig& cfg,
                                     uint16_t max_size, uint64_t acked_features);
    // Rebuilds a queue from state(), re-running the same checks on the ring placement.
    static Result<SplitQueue> restore(const GuestMemory& mem, const SplitQueueState& st);
    SplitQueueState state() const;
    // For a snapshot (VirtioDevice::settle_queues): the position with the last `unstarted`
    // popped chains handed back. Refused while any other chain is in flight.
    Result<QueuePosition> position(uint16_t unstarted) const;

    // Takes the next available chain. nullopt: ring empty (with EVENT_IDX, avail_event has
    // been set so the driver's next addition notifies us, and the ring re-checked after
    // that, so a caller that pops until nullopt cannot miss a buffer).
    // Error: the queue itself is broken (avail idx more than `size` ahead of what we popped,
    // a head index >= size, ring not readable): stop using it, the device needs a reset.
    Result<std::optional<PoppedChain>> pop(GuestMemory& mem);

    // Puts (head, written_len) on the used ring (an error if nothing is in flight) and publishes the new used idx (release:
    // the element, and the data the device wrote, become visible before the idx).
    Result<void> add_used(GuestMemory& mem, uint16_t head, uint32_t written_len);

    // Whether the driver wants a used-buffer notification now (§2.7.7): with EVENT_IDX, if
    // used idx moved past used_event since the last check; otherwise unless the driver set
    // VIRTQ_AVAIL_F_NO_INTERRUPT. Call after a batch of add_used(), then signal if true.
    Result<bool> should_notify(GuestMemory& mem);

    uint16_t size() const { return st_.size; }
    bool event_idx() const { return st_.event_idx; }
    uint16_t next_avail() const { return st_.next_avail; }
    uint16_t next_used() const { return st_.next_used; }
    // Chains popped (including malformed ones) but not yet returned with add_used().
    uint16_t in_flight() const { return static_cast<uint16_t>(st_.next_avail - st_.next_used); }

private:
    explicit SplitQueue(const SplitQueueState& st) : st_(st) {}
    static Result<void> check_layout(const GuestMemory& mem, const SplitQueueState& st);
    Result<uint16_t> read_avail_idx(const GuestMemory& mem) const;
    Result<void> publish_avail_event(GuestMemory& mem, uint16_t value);

    SplitQueueState st_;
};

}  // namespace kestrel
