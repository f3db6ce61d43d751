#include "boot/loader/zero_page.hpp"

#include <cstring>

#include "boot/loader/bzimage.hpp"

namespace kestrel::boot {

namespace {

// boot.rst heap_end_ptr: offset from the real-mode code of the end of setup's stack/heap,
// minus 0x200. 0xfe00 is the conventional full 64 KiB segment; the 64-bit entry path never
// runs the real-mode setup code, but the kernel copies the value as a loader would leave it.
constexpr uint16_t kHeapEndPtr = 0xfe00;

uint32_t low32(uint64_t v) { return static_cast<uint32_t>(v); }
uint32_t high32(uint64_t v) { return static_cast<uint32_t>(v >> 32); }

}  // namespace

Result<BootParams> build_zero_page(std::span<const uint8_t> setup_header,
                                   const BootInfoInputs& in) {
    BootParams bp{};
    if (in.memory_map.size() > kZeroPageE820Max)
        return fail("memory map has {} entries, the zero page holds at most {}",
                    in.memory_map.size(), kZeroPageE820Max);
    if (setup_header.size() > kSetupHeaderRoomEnd - kSetupHeaderOffset)
        return fail("setup header of {} bytes does not fit boot_params (room {:#x})",
                    setup_header.size(), kSetupHeaderRoomEnd - kSetupHeaderOffset);

    auto* raw = reinterpret_cast<uint8_t*>(&bp);
    bool acpi_rsdp_field = true;
    if (!setup_header.empty()) {
        std::memcpy(raw + kSetupHeaderOffset, setup_header.data(), setup_header.size());
        acpi_rsdp_field = bp.hdr.version >= kAcpiRsdpProtocol;
        bp.hdr.loadflags = static_cast<uint8_t>(bp.hdr.loadflags | kCanUseHeap);
        bp.hdr.heap_end_ptr = kHeapEndPtr;
    } else {
        bp.hdr.boot_flag = kBootFlag;
        bp.hdr.header = kHeaderMagic;
        bp.hdr.cmdline_size = static_cast<uint32_t>(in.cmdline_len);
    }
    bp.hdr.type_of_loader = kLoaderTypeUndefined;
    bp.hdr.cmd_line_ptr = low32(in.cmdline.raw);
    bp.ext_cmd_line_ptr = high32(in.cmdline.raw);
    if (in.initrd) {
        auto [addr, size] = *in.initrd;
        bp.hdr.ramdisk_image = low32(addr.raw);
        bp.ext_ramdisk_image = high32(addr.raw);
        bp.hdr.ramdisk_size = low32(size);
        bp.ext_ramdisk_size = high32(size);
    }
    if (acpi_rsdp_field) bp.acpi_rsdp_addr = in.rsdp.raw;
    bp.e820_entries = static_cast<uint8_t>(in.memory_map.size());
    for (size_t i = 0; i < in.memory_map.size(); ++i) {
        const auto& e = in.memory_map[i];
        bp.e820_table[i] = {e.addr, e.size, static_cast<uint32_t>(e.type)};
    }
    return bp;
}

}  // namespace kestrel::boot
