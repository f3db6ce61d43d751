#include "devices/virtio/queue/descriptor_chain.hpp"

#include <algorithm>

#include "devices/virtio/queue/virtq_spec.hpp"

namespace kestrel {

namespace {

Result<virtq::Desc> read_desc(const GuestMemory& mem, GuestAddress table, uint32_t index) {
    // The caller bounds index by the table's entry count, so this cannot overflow.
    return mem.read_obj<virtq::Desc>(table + uint64_t{index} * sizeof(virtq::Desc));
}

}  // namespace

Result<void> DescriptorChain::append(const GuestMemory& mem, uint64_t addr, uint32_t len,
                                     bool writable) {
    if (!writable && readable_count_ != descs_.size())
        return fail("descriptor chain {}: device-readable descriptor after a writable one "
                    "(virtio 1.2 §2.7.4.2)", head_);
    if (len != 0 && !mem.slice(GuestAddress(addr), len))
        return fail("descriptor chain {}: buffer {:#x}+{:#x} is outside guest RAM", head_,
                    addr, len);
    descs_.push_back(Descriptor{GuestAddress(addr), len, writable});
    if (writable) {
        writable_bytes_ += len;
    } else {
        ++readable_count_;
        readable_bytes_ += len;
    }
    return {};
}

Result<DescriptorChain> DescriptorChain::parse(const GuestMemory& mem, GuestAddress desc_table,
                                               uint16_t queue_size, uint16_t head,
                                               bool indirect_allowed) {
    if (head >= queue_size)
        return fail("descriptor chain head {} >= queue size {}", head, queue_size);
    DescriptorChain chain;
    chain.head_ = head;

    uint32_t index = head;
    for (uint32_t count = 0;; ++count) {
        // A chain in the table can visit each of its queue_size slots once (§2.7.5.3.1: no
        // chain longer than the queue size), so a further step means a loop.
        if (count >= queue_size)
            return fail("descriptor chain {}: longer than the queue size {} (loop?)", head,
                        queue_size);
        virtq::Desc d = TRY(read_desc(mem, desc_table, index));
        if (d.flags & virtq::kDescFIndirect) {
            if (!indirect_allowed)
                return fail("descriptor chain {}: INDIRECT without VIRTIO_F_INDIRECT_DESC",
                            head);
            if (d.flags & virtq::kDescFNext)
                return fail("descriptor chain {}: INDIRECT together with NEXT "
                            "(virtio 1.2 §2.7.5.3.1)", head);
            if (d.len == 0 || d.len % sizeof(virtq::Desc) != 0 || d.len > kMaxIndirectTableBytes)
                return fail("descriptor chain {}: indirect table length {} is not a multiple "
                            "of 16 in 16..{}", head, d.len, kMaxIndirectTableBytes);
            GuestAddress table(d.addr);
            if (!mem.slice(table, d.len))
                return fail("descriptor chain {}: indirect table {:#x}+{:#x} is outside "
                            "guest RAM", head, d.addr, d.len);
            uint32_t entries = d.len / sizeof(virtq::Desc);
            uint32_t i = 0;
            for (uint32_t n = 0;; ++n) {
                if (n >= entries)
                    return fail("descriptor chain {}: indirect chain longer than its {} "
                                "entries (loop?)", head, entries);
                virtq::Desc e = TRY(read_desc(mem, table, i));
                if (e.flags & virtq::kDescFIndirect)
                    return fail("descriptor chain {}: INDIRECT inside an indirect table "
                                "(virtio 1.2 §2.7.5.3.1)", head);
                TRY(chain.append(mem, e.addr, e.len, e.flags & virtq::kDescFWrite));
                if (!(e.flags & virtq::kDescFNext)) break;
                if (e.next >= entries)
                    return fail("descriptor chain {}: indirect next {} >= table entries {}",
                                head, e.next, entries);
                i = e.next;
            }
            break;  // INDIRECT excludes NEXT: the table ends the chain.
        }
        TRY(chain.append(mem, d.addr, d.len, d.flags & virtq::kDescFWrite));
        if (!(d.flags & virtq::kDescFNext)) break;
        if (d.next >= queue_size)
            return fail("descriptor chain {}: next {} >= queue size {}", head, d.next,
                        queue_size);
        index = d.next;
    }
    return chain;
}

namespace {

// Calls f(descriptor, offset into it, bytes) for the pieces of `part` covering
// [offset, offset+len); the caller has clipped len to the part's total.
template <class F>
Result<void> for_each_piece(std::span<const Descriptor> part, uint64_t offset, uint64_t len,
                            F&& f) {
    for (const Descriptor& d : part) {
        if (len == 0) break;
        if (offset >= d.len) {
            offset -= d.len;
            continue;
        }
        uint64_t n = std::min<uint64_t>(d.len - offset, len);
        TRY(f(d, offset, n));
        len -= n;
        offset = 0;
    }
    return {};
}

}  // namespace

Result<size_t> DescriptorChain::read_to(const GuestMemory& mem, std::span<uint8_t> out,
                                        size_t offset) const {
    if (offset >= readable_bytes_) return size_t{0};
    uint64_t total = std::min<uint64_t>(out.size(), readable_bytes_ - offset);
    size_t done = 0;
    TRY(for_each_piece(readable(), offset, total,
                       [&](const Descriptor& d, uint64_t off, uint64_t n) -> Result<void> {
                           TRY(mem.read(d.addr + off, out.subspan(done, n)));
                           done += n;
                           return {};
                       }));
    return done;
}

Result<size_t> DescriptorChain::write_from(GuestMemory& mem, std::span<const uint8_t> in,
                                           size_t offset) const {
    if (offset >= writable_bytes_) return size_t{0};
    uint64_t total = std::min<uint64_t>(in.size(), writable_bytes_ - offset);
    size_t done = 0;
    TRY(for_each_piece(writable(), offset, total,
                       [&](const Descriptor& d, uint64_t off, uint64_t n) -> Result<void> {
                           TRY(mem.write(d.addr + off, in.subspan(done, n)));
                           done += n;
                           return {};
                       }));
    return done;
}

Result<void> DescriptorChain::append_readable_iovecs(const GuestMemory& mem, uint64_t offset,
                                                     uint64_t len, std::vector<iovec>& out) const {
    if (offset > readable_bytes_ || len > readable_bytes_ - offset)
        return fail("descriptor chain {}: readable range {}+{} exceeds its {} bytes", head_,
                    offset, len, readable_bytes_);
    return for_each_piece(readable(), offset, len,
                          [&](const Descriptor& d, uint64_t off, uint64_t n) -> Result<void> {
                              auto s = TRY(mem.slice(d.addr + off, n));
                              // iovec has no const variant; the consumer (writev, io_uring
                              // write) only reads through it.
                              out.push_back(iovec{const_cast<uint8_t*>(s.data()), s.size()});
                              return {};
                          });
}

template <class Fn>
Result<void> DescriptorChain::each_writable(uint64_t offset, uint64_t len, Fn&& fn) const {
    if (offset > writable_bytes_ || len > writable_bytes_ - offset)
        return fail("descriptor chain {}: writable range {}+{} exceeds its {} bytes", head_,
                    offset, len, writable_bytes_);
    return for_each_piece(writable(), offset, len,
                          [&](const Descriptor& d, uint64_t off, uint64_t n) { return fn(d.addr + off, n); });
}

Result<void> DescriptorChain::append_writable_iovecs(GuestMemory& mem, uint64_t offset,
                                                     uint64_t len, std::vector<iovec>& out) const {
    return each_writable(offset, len, [&](GuestAddress a, uint64_t n) -> Result<void> {
        auto s = TRY(mem.slice_mut(a, n));
        out.push_back(iovec{s.data(), s.size()});
        return {};
    });
}

Result<void> DescriptorChain::mark_written(GuestMemory& mem, uint64_t offset, uint64_t len) const {
    return each_writable(offset, len, [&](GuestAddress a, uint64_t n) -> Result<void> {
        TRY(mem.slice_mut(a, n));  // marks the pages
        return {};
    });
}

Result<std::vector<iovec>> DescriptorChain::readable_iovecs(const GuestMemory& mem,
                                                            uint64_t offset, uint64_t len) const {
    std::vector<iovec> iov;
    TRY(append_readable_iovecs(mem, offset, len, iov));
    return iov;
}

Result<std::vector<iovec>> DescriptorChain::writable_iovecs(GuestMemory& mem, uint64_t offset,
                                                            uint64_t len) const {
    std::vector<iovec> iov;
    TRY(append_writable_iovecs(mem, offset, len, iov));
    return iov;
}

}  // namespace kestrel
