// DescriptorChain: one request the driver made available, as a validated COPY of its
// descriptors (virtio 1.2 §2.7.4, §2.7.5). The guest can rewrite its descriptor table at any
// time, so each descriptor is read from guest memory exactly once, checked, and only the
// copy is used afterwards.
//
// Rules enforced by parse() (each violation is an error, the chain is unusable):
//  - every `next` index is < queue size (or < table entries inside an indirect table);
//  - no loops: a chain in the descriptor table may hold at most queue-size descriptors,
//    an indirect table chain at most its number of entries;
//  - VIRTQ_DESC_F_INDIRECT only with VIRTIO_F_INDIRECT_DESC negotiated, never together
//    with VIRTQ_DESC_F_NEXT, never inside an indirect table (§2.7.5.3.1); the table length
//    is a non-zero multiple of 16 bytes and at most kMaxIndirectTableBytes;
//  - every buffer [addr, addr+len) lies inside one guest RAM region (overflow-safe);
//  - no device-readable descriptor after a device-writable one (§2.7.4.2);
//  - zero-length descriptors are allowed: they are kept in descriptors() with len 0,
//    their address is not checked (no byte of it is ever touched) and they contribute
//    nothing to the totals, copies or iovecs.
#pragma once

#include <sys/uio.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "vmm/base/error.hpp"
#include "vmm/memory/guest_memory.hpp"

namespace kestrel {

struct Descriptor {
    GuestAddress addr;
    uint32_t len = 0;
    bool device_writable = false;
};

// A chain's descriptors: up to kInline in place, more on the heap, so the common request
// costs no allocation (a block request or an MTU frame needs 1-4; a Linux TSO frame up to
// MAX_SKB_FRAGS 17 + 2).
class DescriptorList {
public:
    void push_back(const Descriptor& d) {
        if (heap_.empty() && size_ < kInline) {
            inline_[size_++] = d;
            return;
        }
        if (heap_.empty()) heap_.assign(inline_.begin(), inline_.begin() + size_);
        heap_.push_back(d);
        ++size_;
    }
    size_t size() const { return size_; }
    std::span<const Descriptor> span() const {
        return heap_.empty() ? std::span<const Descriptor>(inline_.data(), size_)
                             : std::span<const Descriptor>(heap_);
    }

private:
    static constexpr size_t kInline = 20;
    std::array<Descriptor, kInline> inline_{};
    std::vector<Descriptor> heap_;
    size_t size_ = 0;
};

class DescriptorChain {
public:
    // Linux uses at most one page of indirect descriptors per request for most devices, and
    // virtio-blk's largest (seg_max 254 + 2) fits in 4 KiB; 64 KiB = 4096 descriptors is a
    // generous cap that still bounds the work a single chain can make the device do.
    static constexpr uint32_t kMaxIndirectTableBytes = 65536;
    static constexpr uint32_t kMaxIndirectDescriptors = kMaxIndirectTableBytes / 16;
    // Upper bound on descriptors() of any chain: a full queue of direct descriptors, the last
    // of which may point at one indirect table (that descriptor itself is not kept).
    static constexpr uint32_t max_descriptors(uint16_t queue_size) {
        return uint32_t{queue_size} + kMaxIndirectDescriptors;
    }

    // Walks the chain starting at `head` in the descriptor table at `desc_table` (validated
    // by the caller to hold queue_size entries). `head` must be < queue_size.
    static Result<DescriptorChain> parse(const GuestMemory& mem, GuestAddress desc_table,
                                         uint16_t queue_size, uint16_t head,
                                         bool indirect_allowed);

    uint16_t head() const { return head_; }
    // Readable descriptors first, then writable ones.
    std::span<const Descriptor> descriptors() const { return descs_.span(); }
    std::span<const Descriptor> readable() const {
        return descs_.span().first(readable_count_);
    }
    std::span<const Descriptor> writable() const {
        return descs_.span().subspan(readable_count_);
    }
    uint64_t readable_bytes() const { return readable_bytes_; }
    uint64_t writable_bytes() const { return writable_bytes_; }

    // Copies device-readable bytes [offset, offset + out.size()) into `out`, clipped at the
    // end of the readable part; returns how many bytes were copied (0 if offset is past it).
    Result<size_t> read_to(const GuestMemory& mem, std::span<uint8_t> out,
                           size_t offset = 0) const;
    // Copies `in` into the device-writable part starting at byte `offset`, clipped at its end;
    // returns how many bytes were written (0 if offset is past it).
    Result<size_t> write_from(GuestMemory& mem, std::span<const uint8_t> in,
                              size_t offset = 0) const;

    // Host iovecs covering exactly [offset, offset+len) of the readable / writable part, for
    // one I/O (e.g. an io_uring readv/writev). An error if the range exceeds the part.
    // Zero-length pieces are left out. The pointers stay valid while guest memory is mapped;
    // do not keep them past the request's completion.
    Result<std::vector<iovec>> readable_iovecs(const GuestMemory& mem, uint64_t offset,
                                               uint64_t len) const;
    Result<std::vector<iovec>> writable_iovecs(GuestMemory& mem, uint64_t offset,
                                               uint64_t len) const;
    // The same, appended to `out` (data paths reuse one vector per slot: no allocation per
    // request). On error `out` may hold part of the pieces.
    Result<void> append_readable_iovecs(const GuestMemory& mem, uint64_t offset, uint64_t len,
                                        std::vector<iovec>& out) const;
    Result<void> append_writable_iovecs(GuestMemory& mem, uint64_t offset, uint64_t len,
                                        std::vector<iovec>& out) const;
    // Marks [offset, offset+len) of the writable bytes dirty again (GuestMemory's bitmap), for
    // memory a host I/O wrote through iovecs taken earlier: the mark taken at submission may
    // already have been collected by a dirty-log round (a Diff snapshot, a migration pass)
    // before the data landed.
    Result<void> mark_written(GuestMemory& mem, uint64_t offset, uint64_t len) const;

private:
    DescriptorChain() = default;
    Result<void> append(const GuestMemory& mem, uint64_t addr, uint32_t len, bool writable);
    // The guest range of each writable piece in [offset, offset+len), after checking the range.
    template <class Fn>
    Result<void> each_writable(uint64_t offset, uint64_t len, Fn&& fn) const;

    uint16_t head_ = 0;
    DescriptorList descs_;
    size_t readable_count_ = 0;
    uint64_t readable_bytes_ = 0;
    uint64_t writable_bytes_ = 0;
};

}  // namespace kestrel
