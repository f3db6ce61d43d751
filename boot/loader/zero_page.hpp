// Builds the Linux zero page (boot_params) a 64-bit-entry kernel reads through RSI.
// boot.rst "64-bit BOOT PROTOCOL": the loader fills boot_params and its setup header
// "as if [loaded] by the 16-bit real-mode code".
#pragma once

#include <span>

#include "boot/loader/boot_info_inputs.hpp"
#include "boot/loader/boot_params.hpp"
#include "vmm/base/error.hpp"

namespace kestrel::boot {

// `setup_header` is the bzImage's header bytes (file 0x1f1 up to 0x202 + byte at 0x201),
// copied in as the protocol asks; empty for an ELF vmlinux, which has none, in which case only
// the fields the kernel reads on the 64-bit path are synthesised.
Result<BootParams> build_zero_page(std::span<const uint8_t> setup_header,
                                   const BootInfoInputs& in);

}  // namespace kestrel::boot
