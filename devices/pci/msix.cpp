#include "devices/pci/msix.hpp"

#include <algorithm>
#include <cstring>

namespace kestrel {

namespace msix {

std::array<uint8_t, kBodySize> capability_body(uint16_t num_vectors, uint8_t table_bar,
                                               uint32_t table_offset, uint8_t pba_bar,
                                               uint32_t pba_offset) {
    // Table size is encoded as N-1 (§6.8.2.3); offsets are QWORD aligned and share their
    // dword with the 3-bit BIR (§6.8.2.4, §6.8.2.5).
    uint16_t control = static_cast<uint16_t>((num_vectors - 1) & kControlTableSizeMask);
    uint32_t table = (table_offset & ~uint32_t{7}) | (table_bar & 7u);
    uint32_t pba = (pba_offset & ~uint32_t{7}) | (pba_bar & 7u);
    std::array<uint8_t, kBodySize> b{};
    std::memcpy(&b[0], &control, 2);
    std::memcpy(&b[2], &table, 4);
    std::memcpy(&b[6], &pba, 4);
    return b;
}

std::array<uint8_t, kBodySize> capability_writable() {
    std::array<uint8_t, kBodySize> m{};
    m[1] = static_cast<uint8_t>((kControlFunctionMask | kControlEnable) >> 8);
    return m;
}

}  // namespace msix

MsixTable::MsixTable(uint16_t num_vectors, std::shared_ptr<MsiSink> sink)
    : num_vectors_(std::clamp<uint16_t>(num_vectors, 1, msix::kMaxVectors)),
      sink_(std::move(sink)),
      entries_(num_vectors_),
      pending_((num_vectors_ + 63) / 64) {}

bool MsixTable::masked(const Entry& e) const {
    return !enabled_ || function_masked_ || (e.control & msix::kVectorControlMask) != 0;
}

bool MsixTable::enabled() const {
    std::lock_guard lock(mutex_);
    return enabled_;
}

bool MsixTable::pending(uint16_t vector) const {
    std::lock_guard lock(mutex_);
    if (vector >= num_vectors_) return false;
    return (pending_[vector / 64] >> (vector % 64)) & 1;
}

void MsixTable::set_control(uint16_t message_control) {
    std::lock_guard lock(mutex_);
    enabled_ = (message_control & msix::kControlEnable) != 0;
    function_masked_ = (message_control & msix::kControlFunctionMask) != 0;
    if (!enabled_ || function_masked_) return;
    for (uint16_t v = 0; v < num_vectors_; ++v)
        if (!masked(entries_[v])) sync_configuration(v);
    deliver_pending();
}

void MsixTable::sync_configuration(uint16_t vector) {
    Entry& e = entries_[vector];
    uint64_t address = uint64_t{e.address_hi} << 32 | e.address_lo;
    if (e.configured && e.configured_address == address && e.configured_data == e.data) return;
    e.configured = true;
    e.configured_address = address;
    e.configured_data = e.data;
    if (sink_) sink_->configure(vector, address, e.data);
}

void MsixTable::deliver_pending() {
    for (uint16_t v = 0; v < num_vectors_; ++v) {
        uint64_t bit = uint64_t{1} << (v % 64);
        if (!(pending_[v / 64] & bit) || masked(entries_[v])) continue;
        pending_[v / 64] &= ~bit;
        sync_configuration(v);
        if (sink_) sink_->fire(v);
    }
}

void MsixTable::notify(uint16_t vector) {
    std::lock_guard lock(mutex_);
    if (vector >= num_vectors_) return;
    if (masked(entries_[vector])) {
        pending_[vector / 64] |= uint64_t{1} << (vector % 64);
        return;
    }
    if (sink_) sink_->fire(vector);
}

MsixTable::State MsixTable::save() const {
    std::lock_guard lock(mutex_);
    State s;
    for (const Entry& e : entries_) s.vectors.push_back({e.address_lo, e.address_hi, e.data, e.control});
    s.pending = pending_;
    return s;
}

Result<void> MsixTable::check(const State& s) const {
    if (s.vectors.size() != num_vectors_ || s.pending.size() != pending_.size())
        return fail("MSI-X: {} vectors and {} PBA words, this function has {} and {}", s.vectors.size(),
                    s.pending.size(), num_vectors_, pending_.size());
    for (size_t v = 0; v < s.vectors.size(); ++v) {
        if (s.vectors[v].address_lo & 3) return fail("MSI-X vector {}: message address {:#x} is not DWORD aligned", v, s.vectors[v].address_lo);
        if (s.vectors[v].control & ~msix::kVectorControlMask)
            return fail("MSI-X vector {}: reserved vector control bits {:#x}", v, s.vectors[v].control);
    }
    if (num_vectors_ % 64 != 0 && (s.pending.back() >> (num_vectors_ % 64)) != 0)
        return fail("MSI-X: pending bits set past vector {}", num_vectors_ - 1);
    return {};
}

Result<void> MsixTable::restore(const State& s, uint16_t message_control) {
    TRY(check(s));
    {
        std::lock_guard lock(mutex_);
        for (size_t v = 0; v < s.vectors.size(); ++v) {
            const VectorState& in = s.vectors[v];
            entries_[v] = Entry{.address_lo = in.address_lo, .address_hi = in.address_hi, .data = in.data,
                                .control = in.control};
        }
        pending_ = s.pending;
    }
    set_control(message_control);
    return {};
}

namespace {
bool valid_access(uint64_t offset, size_t size, uint64_t limit) {
    return (size == 4 || size == 8) && offset % size == 0 && offset < limit &&
           size <= limit - offset;
}
}  // namespace

void MsixTable::table_read(uint64_t offset, std::span<uint8_t> data) {
    std::fill(data.begin(), data.end(), 0);
    if (!valid_access(offset, data.size(), table_bytes())) return;
    std::lock_guard lock(mutex_);
    for (size_t done = 0; done < data.size(); done += 4) {
        uint64_t at = offset + done;
        const Entry& e = entries_[at / msix::kEntrySize];
        uint32_t v = 0;
        switch (at % msix::kEntrySize) {
        case 0: v = e.address_lo; break;
        case 4: v = e.address_hi; break;
        case 8: v = e.data; break;
        case 12: v = e.control; break;
        }
        std::memcpy(data.data() + done, &v, 4);
    }
}

void MsixTable::table_write(uint64_t offset, std::span<const uint8_t> data) {
    if (!valid_access(offset, data.size(), table_bytes())) return;
    std::lock_guard lock(mutex_);
    for (size_t done = 0; done < data.size(); done += 4) {
        uint64_t at = offset + done;
        uint32_t v;
        std::memcpy(&v, data.data() + done, 4);
        write_dword(static_cast<uint16_t>(at / msix::kEntrySize),
                    static_cast<unsigned>(at % msix::kEntrySize), v);
    }
}

void MsixTable::write_dword(uint16_t vector, unsigned field, uint32_t value) {
    Entry& e = entries_[vector];
    bool was_masked = masked(e);
    switch (field) {
    case 0: e.address_lo = value & ~uint32_t{3}; break;  // DWORD aligned (§6.8.2.7)
    case 4: e.address_hi = value; break;
    case 8: e.data = value; break;
    case 12: e.control = value & msix::kVectorControlMask; break;  // other bits reserved
    }
    if (masked(e)) return;
    sync_configuration(vector);
    if (was_masked) deliver_pending();
}

void MsixTable::pba_read(uint64_t offset, std::span<uint8_t> data) {
    std::fill(data.begin(), data.end(), 0);
    if (!valid_access(offset, data.size(), pba_bytes())) return;
    std::lock_guard lock(mutex_);
    uint64_t word = pending_[offset / 8];
    uint64_t value = data.size() == 8 ? word : (word >> (offset % 8 * 8)) & 0xffffffffu;
    std::memcpy(data.data(), &value, data.size());
}

}  // namespace kestrel
