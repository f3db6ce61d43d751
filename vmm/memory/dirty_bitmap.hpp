// DirtyBitmap: one bit per 4 KiB page of one guest RAM region, for pages the VMM itself
// writes (KVM's own dirty log only sees guest writes). A relaxed flag check when off.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <vector>

namespace kestrel {

class DirtyBitmap {
public:
    static constexpr uint64_t kPageShift = 12;

    explicit DirtyBitmap(uint64_t region_bytes)
        : pages_((region_bytes + (1u << kPageShift) - 1) >> kPageShift),
          words_(std::make_unique<std::atomic<uint64_t>[]>((pages_ + 63) / 64)) {}

    void enable(bool on) { enabled_.store(on, std::memory_order_relaxed); }
    bool enabled() const { return enabled_.load(std::memory_order_relaxed); }
    uint64_t pages() const { return pages_; }

    // Marks [offset, offset+len) of the region; caller has checked the range.
    void mark(uint64_t offset, uint64_t len) {
        if (!enabled() || len == 0) return;
        uint64_t first = offset >> kPageShift, last = (offset + len - 1) >> kPageShift;
        for (uint64_t p = first; p <= last; ++p)
            words_[p / 64].fetch_or(uint64_t{1} << (p % 64), std::memory_order_relaxed);
    }
    bool is_dirty(uint64_t page) const {
        return page < pages_ &&
               (words_[page / 64].load(std::memory_order_relaxed) >> (page % 64)) & 1;
    }
    // Returns the bitmap words and clears them (migration takes one round at a time).
    std::vector<uint64_t> take() {
        std::vector<uint64_t> out((pages_ + 63) / 64);
        for (size_t i = 0; i < out.size(); ++i)
            out[i] = words_[i].exchange(0, std::memory_order_relaxed);
        return out;
    }

    // ORs `words` (from take()) back in: pages taken but not saved after all.
    void merge(const std::vector<uint64_t>& words) {
        for (size_t i = 0; i < words.size() && i < (pages_ + 63) / 64; ++i)
            words_[i].fetch_or(words[i], std::memory_order_relaxed);
    }

private:
    uint64_t pages_;
    std::unique_ptr<std::atomic<uint64_t>[]> words_;
    std::atomic<bool> enabled_{false};
};

}  // namespace kestrel
