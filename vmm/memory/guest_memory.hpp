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
    // Regions must be page-aligned, non-empty and non-overlapping.
    static Result<GuestMemory> create(std::span<const GuestRegionSpec> specs);

    GuestMemory(GuestMemory&&) = default;
    GuestMemory& operator=(GuestMemory&&) = default;

    const std::vector<GuestRegion>& regions() const { return regions_; }
    uint64_t total_size() const;
    // Highest RAM address + 1.
    GuestAddress end() const;

    // A checked view of [addr, addr+len) for reading (len 0 is valid at any in-range addr).
    Result<std::span<const uint8_t>> slice(GuestAddress addr, uint64_t len) const;
    // A checked view for writing; marks the pages dirty.
    Result<std::span<uint8_t>> slice_mut(GuestAddress addr, uint64_t len);

    Result<void> read(GuestAddress addr, std::span<uint8_t> out) const;
    Result<void> write(GuestAddress addr, std::span<const uint8_t> in);
    Result<void> fill(GuestAddress addr, uint64_t len, uint8_t value);

    template <class T>
        requires std::is_trivially_copyable_v<T>
    Result<T> read_obj(GuestAddress addr) const {
        T v;
        TRY(read(addr, std::span(reinterpret_cast<uint8_t*>(&v), sizeof v)));
        return v;
    }
    template <class T>
        requires std::is_trivially_copyable_v<T>
    Result<void> write_obj(GuestAddress addr, const T& v) {
        return write(addr, std::span(reinterpret_cast<const uint8_t*>(&v), sizeof v));
    }

    // Turns VMM-side dirty tracking on or off for every region.
    void track_dirty(bool on);

private:
    explicit GuestMemory(std::vector<GuestRegion> r) : regions_(std::move(r)) {}
    const GuestRegion* find(GuestAddress addr, uint64_t len) const;

    std::vector<GuestRegion> regions_;
};

}  // namespace kestrel
