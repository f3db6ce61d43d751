// GuestMemory: the only owner of guest RAM mappings. Every access names (address, length)
// and is checked against one region's bounds, overflow included; writes mark the VMM
// dirty bitmap. No raw host pointer leaves except a checked span for a single I/O.
#pragma once

#include <cstdint>
#include <cstring>
#include <span>
#include <type_traits>
#include <vector>

#include "vmm/base/error.hpp"
#include "vmm/base/mapping.hpp"
#include "vmm/memory/dirty_bitmap.hpp"
#include "vmm/memory/guest_address.hpp"

namespace kestrel {

struct GuestRegionSpec {
    GuestAddress start;
    uint64_t size;
};

class GuestRegion {
public:
    GuestRegion(GuestAddress start, Mapping map)
        : start_(start), map_(std::move(map)), dirty_(std::make_unique<DirtyBitmap>(map_.size())) {}
    GuestAddress start() const { return start_; }
    uint64_t size() const { return map_.size(); }
    uint8_t* host_base() const { return map_.data(); }  // for KVM_SET_USER_MEMORY_REGION only
    DirtyBitmap& dirty() const { return *dirty_; }
    bool contains(GuestAddress a, uint64_t len) const {
        if (a.raw < start_.raw) return false;
        uint64_t off = a.raw - start_.raw;
        return off <= size() && len <= size() - off;
    }

private:
    GuestAddress start_;
    Mapping map_;
    std::unique_ptr<DirtyBitmap> dirty_;
};

class GuestMemory {
public:
    // Regions must be page-aligned, non-empty and non-overlapping. With `backing_fd`, the
    // regions map that file copy-on-write (Mapping::file_private), lowest region first from
    // offset 0, one after another: the file must hold exactly their total size.
    static Result<GuestMemory> create(std::span<const GuestRegionSpec> specs, int backing_fd = -1);

    GuestMemory(GuestMemory&&) = default;
    GuestMemory& operator=(GuestMemory&&) = default;

    const std::vector<GuestRegion>& regions() const { return regions_; }
    // Whether writes are being logged (track_dirty_pages): every region is enabled together.
    bool dirty_tracking() const { return !regions_.empty() && regions_.front().dirty().enabled(); }
    uint64_t total_size() const;
    // Highest RAM address + 1.
    GuestAddress end() const;

    // A checked view of [addr, addr+len) for reading (len 0 is valid at any in-range addr).
    // The accessors are inline: the data paths call them several times per request, and
    // out of line each small read_obj cost a call plus a libc memcpy of a runtime size.
    Result<std::span<const uint8_t>> slice(GuestAddress addr, uint64_t len) const {
        const GuestRegion* r = find(addr, len);
        if (!r) [[unlikely]] return std::unexpected(outside(addr, len));
        return std::span<const uint8_t>(r->host_base() + (addr.raw - r->start().raw), len);
    }
    // A checked view for writing; marks the pages dirty.
    Result<std::span<uint8_t>> slice_mut(GuestAddress addr, uint64_t len) {
        const GuestRegion* r = find(addr, len);
        if (!r) [[unlikely]] return std::unexpected(outside(addr, len));
        uint64_t off = addr.raw - r->start().raw;
        r->dirty().mark(off, len);
        return std::span<uint8_t>(r->host_base() + off, len);
    }

    Result<void> read(GuestAddress addr, std::span<uint8_t> out) const {
        auto s = TRY(slice(addr, out.size()));
        std::memcpy(out.data(), s.data(), out.size());
        return {};
    }
    Result<void> write(GuestAddress addr, std::span<const uint8_t> in) {
        auto s = TRY(slice_mut(addr, in.size()));
        std::memcpy(s.data(), in.data(), in.size());
        return {};
    }
    Result<void> fill(GuestAddress addr, uint64_t len, uint8_t value);
    // Gives the host pages of [addr, addr+len) back (madvise MADV_DONTNEED): afterwards the
    // range reads as zeros (anonymous RAM) or as its backing file (a restored snapshot's
    // copy-on-write mapping). For memory the guest says it does not use (virtio-balloon).
    // addr and len must be 4 KiB aligned and inside one region; the pages are marked dirty,
    // so a migration or Diff snapshot carries the new content.
    Result<void> discard(GuestAddress addr, uint64_t len);

    template <class T>
        requires std::is_trivially_copyable_v<T>
    Result<T> read_obj(GuestAddress addr) const {
        auto s = TRY(slice(addr, sizeof(T)));
        T v;
        std::memcpy(&v, s.data(), sizeof v);
        return v;
    }
    template <class T>
        requires std::is_trivially_copyable_v<T>
    Result<void> write_obj(GuestAddress addr, const T& v) {
        auto s = TRY(slice_mut(addr, sizeof(T)));
        std::memcpy(s.data(), &v, sizeof v);
        return {};
    }

    // Turns VMM-side dirty tracking on or off for every region.
    void track_dirty(bool on);

private:
    explicit GuestMemory(std::vector<GuestRegion> r) : regions_(std::move(r)) {}
    const GuestRegion* find(GuestAddress addr, uint64_t len) const {
        for (const GuestRegion& r : regions_)
            if (r.contains(addr, len)) return &r;
        return nullptr;
    }
    [[gnu::cold]] static Error outside(GuestAddress addr, uint64_t len);

    std::vector<GuestRegion> regions_;
};

}  // namespace kestrel
