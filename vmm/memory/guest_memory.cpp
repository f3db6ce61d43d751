#include "vmm/memory/guest_memory.hpp"

#include <sys/mman.h>
#include <sys/stat.h>

#include <algorithm>

namespace kestrel {

namespace {
constexpr uint64_t kPage = 4096;
}

Result<GuestMemory> GuestMemory::create(std::span<const GuestRegionSpec> specs, int backing_fd) {
    std::vector<GuestRegionSpec> sorted(specs.begin(), specs.end());
    std::sort(sorted.begin(), sorted.end(),
              [](auto& a, auto& b) { return a.start.raw < b.start.raw; });
    std::vector<GuestRegion> regions;
    uint64_t prev_end = 0;
    uint64_t offset = 0;  // in backing_fd
    if (backing_fd >= 0) {
        uint64_t total = 0;
        for (const auto& s : sorted) total += s.size;
        struct stat st {};
        if (::fstat(backing_fd, &st) != 0) return fail_errno("guest memory file");
        if (static_cast<uint64_t>(st.st_size) != total)
            return fail("the guest memory file has {} bytes, the guest's RAM {}", st.st_size, total);
    }
    for (const auto& s : sorted) {
        if (s.size == 0 || s.size % kPage || s.start.raw % kPage)
            return fail("guest memory region {:#x}+{:#x} is empty or not page-aligned",
                        s.start.raw, s.size);
        auto end = s.start.checked_add(s.size);
        if (!end) return fail("guest memory region {:#x}+{:#x} overflows", s.start.raw, s.size);
        if (!regions.empty() && s.start.raw < prev_end)
            return fail("guest memory regions overlap at {:#x}", s.start.raw);
        auto map = backing_fd >= 0 ? Mapping::file_private(backing_fd, static_cast<off_t>(offset), s.size)
                                   : Mapping::anonymous(s.size);
        if (!map) return std::unexpected(context(map.error(), "allocating guest memory"));
        offset += s.size;
        regions.emplace_back(s.start, std::move(*map));
        prev_end = end->raw;
    }
    return GuestMemory(std::move(regions));
}

uint64_t GuestMemory::total_size() const {
    uint64_t t = 0;
    for (auto& r : regions_) t += r.size();
    return t;
}

GuestAddress GuestMemory::end() const {
    return regions_.empty() ? GuestAddress(0)
                            : GuestAddress(regions_.back().start().raw + regions_.back().size());
}

Error GuestMemory::outside(GuestAddress addr, uint64_t len) {
    return Error{fmt::format("guest range {:#x}+{:#x} is outside guest RAM", addr.raw, len), 0};
}

Result<void> GuestMemory::fill(GuestAddress addr, uint64_t len, uint8_t value) {
    auto s = TRY(slice_mut(addr, len));
    std::memset(s.data(), value, len);
    return {};
}

Result<void> GuestMemory::discard(GuestAddress addr, uint64_t len) {
    constexpr uint64_t kPage = 4096;
    if (addr.raw % kPage != 0 || len % kPage != 0)
        return fail("discard of guest range {:#x}+{:#x}: not 4 KiB aligned", addr.raw, len);
    auto s = TRY(slice_mut(addr, len));  // checks the range and marks it dirty
    if (len == 0) return {};
    if (::madvise(s.data(), s.size(), MADV_DONTNEED) != 0)
        return fail_errno("madvise(MADV_DONTNEED) of guest range {:#x}+{:#x}", addr.raw, len);
    return {};
}

void GuestMemory::track_dirty(bool on) {
    for (auto& r : regions_) r.dirty().enable(on);
}

}  // namespace kestrel
