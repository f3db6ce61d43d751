// Builds the PVH boot information block placed at x86::kPvhStartInfo: hvm_start_info, then the
// module list (the initrd, if any), then the memory map, all below x86::kZeroPage.
#pragma once

#include <cstdint>
#include <vector>

#include "boot/loader/boot_info_inputs.hpp"
#include "vmm/base/error.hpp"

namespace kestrel::boot {

// The bytes to write at x86::kPvhStartInfo (pointers inside are absolute guest addresses).
Result<std::vector<uint8_t>> build_pvh_start_info(const BootInfoInputs& in);

}  // namespace kestrel::boot
