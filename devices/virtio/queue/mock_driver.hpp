// MockDriver: the DRIVER side of one split virtqueue, for tests. It lays the rings out in a
// GuestMemory area, hands out buffers from the rest of that area, and lets a test offer
// well-formed chains (add_chain, add_indirect_chain) or arbitrary hostile descriptors
// (write_descriptor / add_raw_chain / write_indirect_table), then read back used entries
// and what the device wrote. Misuse by the test itself (area too small, queue full, bad
// head) aborts with a message: this is test code, never linked into the VMM's data path.
//
// Layout inside [base, base+size): descriptor table at base, available ring right after it
// (2-byte aligned), used ring at the next 4 KiB boundary, buffers from the 4 KiB boundary
// after that up to the end.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <span>
#include <utility>
#include <vector>

#include "devices/virtio/queue/virtq_spec.hpp"
#include "devices/virtio/virtio_device.hpp"
#include "vmm/memory/guest_memory.hpp"

namespace kestrel {

class MockDriver {
public:
    MockDriver(GuestMemory& mem, GuestAddress base, uint64_t size, uint16_t queue_size);

    // Where the queue is, as a transport would report it (ready = true).
    QueueConfig config() const;

    // Offers one chain: a descriptor per readable span (data copied into fresh guest
    // buffers), then a writable descriptor per length (buffers zero-filled). The head is put
    // in the avail ring but not published until kick(). Returns the head index.
    uint16_t add_chain(std::vector<std::span<const uint8_t>> readable,
                       std::vector<uint32_t> writable_lens);
    // Same buffers, described by one indirect table referenced from a single descriptor.
    uint16_t add_indirect_chain(std::vector<std::span<const uint8_t>> readable,
                                std::vector<uint32_t> writable_lens);

    // Hostile chains: descriptors are written verbatim (flags, next, addr, len as given).
    // Raw writes do not reserve table slots: keep them clear of add_chain chains in flight.
    void write_descriptor(uint16_t index, const virtq::Desc& d);
    // Writes descs at table[first..], and puts `first` in the avail ring (unpublished).
    uint16_t add_raw_chain(uint16_t first, std::span<const virtq::Desc> descs);
    // Puts an arbitrary head value (even >= queue size) in the next avail slot.
    void push_avail(uint16_t head);
    // Copies an indirect table into a fresh guest buffer; returns its address.
    GuestAddress write_indirect_table(std::span<const virtq::Desc> descs);
    // A fresh zeroed guest buffer of `len` bytes (for raw descriptors to point at).
    GuestAddress alloc(uint64_t len);

    // Publishes every head added since the last kick (avail->idx += n, release-ordered).
    void kick();
    void set_avail_idx(uint16_t idx);  // hostile: arbitrary jumps
    uint16_t avail_idx() const;

    // Notification suppression knobs (§2.7.7, §2.7.10).
    void set_used_event(uint16_t v);
    void set_no_interrupt(bool on);
    uint16_t avail_event() const;  // what the device asked for (EVENT_IDX)

    // The next used element the device published, or nullopt. Frees the chain's
    // descriptors (for chains made by add_chain / add_indirect_chain).
    std::optional<std::pair<uint16_t, uint32_t>> next_used();
    uint16_t used_idx() const;

    // The bytes in the writable buffers of chain `head` (as added by add_chain /
    // add_indirect_chain), concatenated, first `len` of them (all if len is larger).
    std::vector<uint8_t> read_writable(uint16_t head, size_t len = SIZE_MAX) const;

    GuestAddress desc_table() const { return desc_; }
    GuestAddress avail_ring() const { return avail_; }
    GuestAddress used_ring() const { return used_; }
    uint16_t queue_size() const { return size_; }
    uint16_t free_descriptors() const { return static_cast<uint16_t>(free_.size()); }

private:
    struct Buffer {
        GuestAddress addr;
        uint32_t len;
    };
    struct ChainRecord {
        std::vector<uint16_t> table_indices;  // descriptors to free on completion
        std::vector<Buffer> writable;
    };
    uint16_t alloc_descriptor();
    std::vector<Buffer> place_readable(std::vector<std::span<const uint8_t>>& readable);
    std::vector<Buffer> place_writable(const std::vector<uint32_t>& lens);

    GuestMemory& mem_;
    uint16_t size_;
    GuestAddress desc_, avail_, used_;
    GuestAddress data_start_, data_end_, data_next_;
    uint16_t pending_ = 0;       // heads added but not published
    uint16_t last_used_ = 0;     // next used index to read back
    std::vector<uint16_t> free_;  // free descriptor table indices
    std::map<uint16_t, ChainRecord> chains_;
};

}  // namespace kestrel
