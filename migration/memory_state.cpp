#include "migration/memory_state.hpp"

namespace kestrel::migration {

namespace {

uint64_t words_for(uint64_t size) { return (size / kStatePage + 63) / 64; }

}  // namespace

uint64_t total_size(const std::vector<MemoryRegion>& layout) {
    uint64_t t = 0;
    for (const auto& r : layout) t += r.size;
    return t;
}

void encode_memory(Encoder& e, const std::vector<MemoryRegion>& layout) {
    e.put_u32(static_cast<uint32_t>(layout.size()));
    for (const auto& r : layout) {
        e.put_u64(r.start);
        e.put_u64(r.size);
    }
}

Result<std::vector<MemoryRegion>> decode_memory(const Section& sec) {
    Decoder d = TRY(Decoder::of(sec, kMemoryStateVersion));
    const uint32_t n = TRY(d.u32_max("regions", kMaxRegions));
    std::vector<MemoryRegion> layout;
    uint64_t end = 0;
    for (uint32_t i = 0; i < n; ++i) {
        MemoryRegion r{TRY(d.u64("start")), TRY(d.u64("size"))};
        if (r.size == 0 || r.size % kStatePage || r.start % kStatePage || r.start + r.size < r.start ||
            (i > 0 && r.start < end))
            return bad_request("state: section 'memory': region {} ({:#x}+{:#x}) is empty, not 4 KiB aligned, "
                               "overflows or overlaps the one before", i, r.start, r.size);
        end = r.start + r.size;
        layout.push_back(r);
    }
    TRY(d.finish());
    return layout;
}

void encode_memory_diff(Encoder& e, const DirtyPages& pages) {
    for (const auto& words : pages) {
        e.put_u32(static_cast<uint32_t>(words.size()));
        for (uint64_t w : words) e.put_u64(w);
    }
}

Result<DirtyPages> decode_memory_diff(const Section& sec, const std::vector<MemoryRegion>& layout) {
    Decoder d = TRY(Decoder::of(sec, kMemoryStateVersion));
    DirtyPages pages;
    for (const auto& r : layout) {
        const uint64_t want = words_for(r.size);
        const uint32_t n = TRY(d.u32("words"));
        if (n != want)
            return bad_request("state: section 'memory-diff': {} words for the region at {:#x}, its {} pages need {}",
                               n, r.start, r.size / kStatePage, want);
        std::vector<uint64_t> words(n);
        for (auto& w : words) w = TRY(d.u64("words"));
        // Bits past the region's last page would name pages it does not have.
        const uint64_t used = (r.size / kStatePage) % 64;
        if (used != 0 && !words.empty() && (words.back() >> used) != 0)
            return bad_request("state: section 'memory-diff': pages past the end of the region at {:#x}", r.start);
        pages.push_back(std::move(words));
    }
    TRY(d.finish());
    return pages;
}

}  // namespace kestrel::migration
