#include "devices/virtio/queue/mock_driver.hpp"

#include <atomic>
#include <cstdio>
#include <cstdlib>

namespace kestrel {

namespace {

[[noreturn]] void die(const char* what) {
    std::fprintf(stderr, "MockDriver: %s\n", what);
    std::abort();
}

template <class T>
T must(Result<T> r, const char* what) {
    if (!r) die(what);
    return std::move(*r);
}
inline void must(Result<void> r, const char* what) {
    if (!r) die(what);
}

uint64_t align_up(uint64_t v, uint64_t a) { return (v + a - 1) / a * a; }

}  // namespace

MockDriver::MockDriver(GuestMemory& mem, GuestAddress base, uint64_t size, uint16_t queue_size)
    : mem_(mem), size_(queue_size) {
    if (queue_size == 0 || base.raw % virtq::kDescAlign) die("bad queue size or base");
    desc_ = base;
    avail_ = desc_ + uint64_t{queue_size} * sizeof(virtq::Desc);
    used_ = GuestAddress(align_up(avail_.raw + virtq::avail_bytes(queue_size, true), 4096));
    data_start_ = GuestAddress(align_up(used_.raw + virtq::used_bytes(queue_size, true), 4096));
    data_end_ = base + size;
    data_next_ = data_start_;
    if (data_start_ >= data_end_) die("area too small for the rings");
    must(mem_.fill(base, data_start_.raw - base.raw, 0), "ring area outside guest memory");
    for (uint32_t i = queue_size; i > 0; --i) free_.push_back(static_cast<uint16_t>(i - 1));
}

QueueConfig MockDriver::config() const {
    return QueueConfig{.size = size_, .ready = true, .desc = desc_, .avail = avail_, .used = used_};
}

GuestAddress MockDriver::alloc(uint64_t len) {
    uint64_t rounded = align_up(len == 0 ? 1 : len, 16);
    if (data_end_.raw - data_next_.raw < rounded) {
        // Recycle the whole buffer area once nothing is outstanding.
        uint16_t outstanding = static_cast<uint16_t>(avail_idx() + pending_ - last_used_);
        if (outstanding != 0 || data_end_.raw - data_start_.raw < rounded)
            die("buffer area exhausted");
        data_next_ = data_start_;
    }
    GuestAddress a = data_next_;
    data_next_ = data_next_ + rounded;
    must(mem_.fill(a, len, 0), "buffer outside guest memory");
    return a;
}

uint16_t MockDriver::alloc_descriptor() {
    if (free_.empty()) die("descriptor table full");
    uint16_t i = free_.back();
    free_.pop_back();
    return i;
}

std::vector<MockDriver::Buffer> MockDriver::place_readable(
    std::vector<std::span<const uint8_t>>& readable) {
    std::vector<Buffer> out;
    for (auto s : readable) {
        GuestAddress a = alloc(s.size());
        must(mem_.write(a, s), "write readable buffer");
        out.push_back(Buffer{a, static_cast<uint32_t>(s.size())});
    }
    return out;
}

std::vector<MockDriver::Buffer> MockDriver::place_writable(const std::vector<uint32_t>& lens) {
    std::vector<Buffer> out;
    for (uint32_t len : lens) out.push_back(Buffer{alloc(len), len});
    return out;
}

uint16_t MockDriver::add_chain(std::vector<std::span<const uint8_t>> readable,
                               std::vector<uint32_t> writable_lens) {
    auto rd = place_readable(readable);
    auto wr = place_writable(writable_lens);
    size_t n = rd.size() + wr.size();
    if (n == 0) die("empty chain");
    if (n > free_.size()) die("descriptor table full");
    ChainRecord rec;
    for (size_t i = 0; i < n; ++i) rec.table_indices.push_back(alloc_descriptor());
    for (size_t i = 0; i < n; ++i) {
        bool w = i >= rd.size();
        const Buffer& b = w ? wr[i - rd.size()] : rd[i];
        bool last = i + 1 == n;
        virtq::Desc d{b.addr.raw, b.len,
                      static_cast<uint16_t>((w ? virtq::kDescFWrite : 0) |
                                            (last ? 0 : virtq::kDescFNext)),
                      last ? uint16_t{0} : rec.table_indices[i + 1]};
        write_descriptor(rec.table_indices[i], d);
    }
    rec.writable = std::move(wr);
    uint16_t head = rec.table_indices[0];
    chains_[head] = std::move(rec);
    push_avail(head);
    return head;
}

uint16_t MockDriver::add_indirect_chain(std::vector<std::span<const uint8_t>> readable,
                                        std::vector<uint32_t> writable_lens) {
    auto rd = place_readable(readable);
    auto wr = place_writable(writable_lens);
    size_t n = rd.size() + wr.size();
    if (n == 0) die("empty chain");
    std::vector<virtq::Desc> table;
    for (size_t i = 0; i < n; ++i) {
        bool w = i >= rd.size();
        const Buffer& b = w ? wr[i - rd.size()] : rd[i];
        bool last = i + 1 == n;
        table.push_back(virtq::Desc{b.addr.raw, b.len,
                                    static_cast<uint16_t>((w ? virtq::kDescFWrite : 0) |
                                                          (last ? 0 : virtq::kDescFNext)),
                                    static_cast<uint16_t>(last ? 0 : i + 1)});
    }
    GuestAddress t = write_indirect_table(table);
    ChainRecord rec;
    uint16_t head = alloc_descriptor();
    rec.table_indices.push_back(head);
    write_descriptor(head, virtq::Desc{t.raw, static_cast<uint32_t>(n * sizeof(virtq::Desc)),
                                       virtq::kDescFIndirect, 0});
    rec.writable = std::move(wr);
    chains_[head] = std::move(rec);
    push_avail(head);
    return head;
}

void MockDriver::write_descriptor(uint16_t index, const virtq::Desc& d) {
    if (index >= size_) die("descriptor index out of range");
    must(mem_.write_obj(desc_ + uint64_t{index} * sizeof(virtq::Desc), d), "write descriptor");
}

uint16_t MockDriver::add_raw_chain(uint16_t first, std::span<const virtq::Desc> descs) {
    if (uint32_t{first} + descs.size() > size_) die("raw chain does not fit the table");
    for (size_t i = 0; i < descs.size(); ++i)
        write_descriptor(static_cast<uint16_t>(first + i), descs[i]);
    push_avail(first);
    return first;
}

void MockDriver::push_avail(uint16_t head) {
    uint16_t idx = static_cast<uint16_t>(avail_idx() + pending_);
    uint64_t slot = idx % size_;
    must(mem_.write_obj(avail_ + virtq::kAvailRingOffset + 2 * slot, head), "write avail ring");
    ++pending_;
}

GuestAddress MockDriver::write_indirect_table(std::span<const virtq::Desc> descs) {
    GuestAddress t = alloc(descs.size_bytes());
    must(mem_.write(t, std::span(reinterpret_cast<const uint8_t*>(descs.data()), descs.size_bytes())),
         "write indirect table");
    return t;
}

void MockDriver::kick() {
    uint16_t idx = static_cast<uint16_t>(avail_idx() + pending_);
    pending_ = 0;
    std::atomic_thread_fence(std::memory_order_release);
    set_avail_idx(idx);
}

void MockDriver::set_avail_idx(uint16_t idx) {
    must(mem_.write_obj(avail_ + virtq::kAvailIdxOffset, idx), "write avail idx");
}

uint16_t MockDriver::avail_idx() const {
    return must(mem_.read_obj<uint16_t>(avail_ + virtq::kAvailIdxOffset), "read avail idx");
}

void MockDriver::set_used_event(uint16_t v) {
    must(mem_.write_obj(avail_ + virtq::avail_used_event_offset(size_), v), "write used_event");
}

void MockDriver::set_no_interrupt(bool on) {
    uint16_t flags = on ? virtq::kAvailFNoInterrupt : 0;
    must(mem_.write_obj(avail_ + virtq::kAvailFlagsOffset, flags), "write avail flags");
}

uint16_t MockDriver::avail_event() const {
    return must(mem_.read_obj<uint16_t>(used_ + virtq::used_avail_event_offset(size_)),
                "read avail_event");
}

uint16_t MockDriver::used_idx() const {
    return must(mem_.read_obj<uint16_t>(used_ + virtq::kUsedIdxOffset), "read used idx");
}

std::optional<std::pair<uint16_t, uint32_t>> MockDriver::next_used() {
    if (used_idx() == last_used_) return std::nullopt;
    std::atomic_thread_fence(std::memory_order_acquire);
    uint64_t slot = last_used_ % size_;
    auto e = must(mem_.read_obj<virtq::UsedElem>(used_ + virtq::kUsedRingOffset + 8 * slot),
                  "read used elem");
    ++last_used_;
    auto it = e.id < size_ ? chains_.find(static_cast<uint16_t>(e.id)) : chains_.end();
    if (it != chains_.end()) {
        for (uint16_t i : it->second.table_indices) free_.push_back(i);
        it->second.table_indices.clear();
    }
    return std::pair{static_cast<uint16_t>(e.id), e.len};
}

std::vector<uint8_t> MockDriver::read_writable(uint16_t head, size_t len) const {
    std::vector<uint8_t> out;
    auto it = chains_.find(head);
    if (it == chains_.end()) die("read_writable: unknown head");
    for (const Buffer& b : it->second.writable) {
        if (out.size() >= len) break;
        size_t n = std::min<size_t>(b.len, len - out.size());
        size_t at = out.size();
        out.resize(at + n);
        must(mem_.read(b.addr, std::span(out).subspan(at, n)), "read writable buffer");
    }
    return out;
}

}  // namespace kestrel
