// Guest RAM's layout and, for a Diff snapshot, which pages its memory file holds, in the
// state stream (migration/state_stream.hpp). The pages themselves travel in the memory file.
//
// Section "memory", version 1: u32 region count (<= kMaxRegions), then per region u64 start,
//   u64 size (guest-physical, 4 KiB multiples, ascending, not overlapping). The memory file
//   holds the regions one after another.
// Section "memory-diff", version 1 (Diff snapshots only): per region of "memory", u32 word
//   count (= ceil(pages / 64)) then that many u64 words, bit p of word w = page 64w + p of the
//   region is in the memory file; every other page is a hole to be taken from the base.
#pragma once

#include <cstdint>
#include <vector>

#include "migration/state_stream.hpp"
#include "vmm/base/error.hpp"

namespace kestrel::migration {

inline constexpr const char* kMemorySection = "memory";
inline constexpr const char* kMemoryDiffSection = "memory-diff";
inline constexpr uint32_t kMemoryStateVersion = 1;
inline constexpr uint32_t kMaxRegions = 16;
inline constexpr uint64_t kStatePage = 4096;

struct MemoryRegion {
    uint64_t start = 0, size = 0;
    bool operator==(const MemoryRegion&) const = default;
};
using DirtyPages = std::vector<std::vector<uint64_t>>;  // per region, 64 pages per word

uint64_t total_size(const std::vector<MemoryRegion>& layout);

void encode_memory(Encoder& e, const std::vector<MemoryRegion>& layout);
Result<std::vector<MemoryRegion>> decode_memory(const Section& s);
void encode_memory_diff(Encoder& e, const DirtyPages& pages);
// Word counts are checked against `layout` before anything is sized by them.
Result<DirtyPages> decode_memory_diff(const Section& s, const std::vector<MemoryRegion>& layout);

}  // namespace kestrel::migration
