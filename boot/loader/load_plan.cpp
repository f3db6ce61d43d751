#include "boot/loader/load_plan.hpp"

#include <algorithm>

namespace kestrel::boot {

void LoadPlan::copy(GuestAddress dst, std::span<const uint8_t> bytes, std::string what) {
    writes_.push_back({dst, bytes.size(), bytes, SIZE_MAX, std::move(what)});
}

void LoadPlan::copy_owned(GuestAddress dst, std::vector<uint8_t> bytes, std::string what) {
    uint64_t len = bytes.size();
    owned_.push_back(std::move(bytes));
    writes_.push_back({dst, len, {}, owned_.size() - 1, std::move(what)});
}

void LoadPlan::zero(GuestAddress dst, uint64_t len, std::string what) {
    writes_.push_back({dst, len, {}, SIZE_MAX, std::move(what)});
}

std::span<const uint8_t> LoadPlan::bytes_of(const Write& w) const {
    // owned_ may have reallocated since the write was recorded, so resolve late.
    if (w.owned_index != SIZE_MAX) return owned_[w.owned_index];
    return w.bytes;
}

Result<void> LoadPlan::validate(const GuestMemory& mem) const {
    for (const auto& w : writes_) {
        if (!mem.slice(w.dst, w.len))
            return fail("{} [{:#x}, +{:#x}) does not fit in guest RAM (RAM ends at {:#x})",
                        w.what, w.dst.raw, w.len, mem.end().raw);
    }
    // In RAM implies no wrap-around, so end = dst + len is safe from here on.
    std::vector<const Write*> order;
    for (const auto& w : writes_)
        if (w.len > 0) order.push_back(&w);
    std::sort(order.begin(), order.end(),
              [](const Write* a, const Write* b) { return a->dst < b->dst; });
    for (size_t i = 1; i < order.size(); ++i) {
        const Write& prev = *order[i - 1];
        const Write& cur = *order[i];
        if (prev.dst.raw + prev.len > cur.dst.raw)
            return fail("{} [{:#x}, {:#x}) overlaps {} [{:#x}, {:#x})", cur.what, cur.dst.raw,
                        cur.dst.raw + cur.len, prev.what, prev.dst.raw, prev.dst.raw + prev.len);
    }
    return {};
}

Result<void> LoadPlan::apply(GuestMemory& mem) const {
    TRY(validate(mem));
    for (const auto& w : writes_) {
        auto bytes = bytes_of(w);
        if (bytes.empty())
            TRY(mem.fill(w.dst, w.len, 0));
        else
            TRY(mem.write(w.dst, bytes));
    }
    return {};
}

}  // namespace kestrel::boot
