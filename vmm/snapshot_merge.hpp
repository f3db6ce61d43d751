// `kestrel snapshot-merge DIFF_STATE DIFF_MEM BASE_MEM OUT_STATE`: turns a Diff snapshot and
// the snapshot before it into one Full snapshot. The pages DIFF_STATE's "memory-diff" section
// lists (migration/memory_state.hpp) are copied from DIFF_MEM onto BASE_MEM, in place (other
// pages of BASE_MEM stay: they did not change since it was taken), and OUT_STATE gets
// DIFF_STATE without that section, so OUT_STATE + BASE_MEM load like a Full snapshot of the
// Diff's moment (PUT /snapshot/load). The page list comes from the state file, never from
// the memory file's holes, so the merge does not depend on the file system reporting them.
//
// Checked before anything is written: both state files parse, DIFF_STATE is a Diff, both
// memory files have the layout's size; OUT_STATE is written beside its name and renamed.
// Merge onto the base the Diff was taken after (or onto the merge of the chain before it):
// kestrel cannot tell one base from another.
#pragma once

#include <cstdint>
#include <string>

#include "vmm/base/error.hpp"

namespace kestrel {

struct MergeResult {
    uint64_t pages = 0;  // copied onto BASE_MEM
};

Result<MergeResult> merge_snapshot(const std::string& diff_state, const std::string& diff_mem,
                                   const std::string& base_mem, const std::string& out_state);

}  // namespace kestrel
