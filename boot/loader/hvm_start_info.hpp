// PVH boot structures: what a Xen-PVH-capable kernel (entered at XEN_ELFNOTE_PHYS32_ENTRY in
// 32-bit protected mode, EBX = start info) reads. Layout: Xen public headers
// xen/include/public/arch-x86/hvm/start_info.h (version 1) and xen/include/public/elfnote.h.
#pragma once

#include <cstddef>
#include <cstdint>

namespace kestrel::boot {

inline constexpr uint32_t kXenElfnotePhys32Entry = 18;  // elfnote.h XEN_ELFNOTE_PHYS32_ENTRY
inline constexpr uint32_t kHvmStartMagic = 0x336ec578;  // start_info.h XEN_HVM_START_MAGIC_VALUE
inline constexpr uint32_t kHvmStartInfoVersion = 1;     // version 1 adds the memory map

// start_info.h "struct hvm_start_info".
struct HvmStartInfo {
    uint32_t magic;           // 0x00
    uint32_t version;         // 0x04
    uint32_t flags;           // 0x08 SIF_xxx
    uint32_t nr_modules;      // 0x0c
    uint64_t modlist_paddr;   // 0x10 array of HvmModlistEntry
    uint64_t cmdline_paddr;   // 0x18 NUL-terminated
    uint64_t rsdp_paddr;      // 0x20 0 = kernel scans for it
    uint64_t memmap_paddr;    // 0x28 array of HvmMemmapEntry (version 1)
    uint32_t memmap_entries;  // 0x30
    uint32_t reserved;        // 0x34 must be 0
};
static_assert(sizeof(HvmStartInfo) == 0x38);
static_assert(offsetof(HvmStartInfo, memmap_paddr) == 0x28);

// start_info.h "struct hvm_modlist_entry".
struct HvmModlistEntry {
    uint64_t paddr;          // 0x00
    uint64_t size;           // 0x08
    uint64_t cmdline_paddr;  // 0x10
    uint64_t reserved;       // 0x18
};
static_assert(sizeof(HvmModlistEntry) == 0x20);

// start_info.h "struct hvm_memmap_table_entry"; type values are the e820 ones.
struct HvmMemmapEntry {
    uint64_t addr;      // 0x00
    uint64_t size;      // 0x08
    uint32_t type;      // 0x10
    uint32_t reserved;  // 0x14
};
static_assert(sizeof(HvmMemmapEntry) == 0x18);

}  // namespace kestrel::boot
