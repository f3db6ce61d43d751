// The Linux x86 zero page (struct boot_params) and its embedded setup header, as far as a
// direct-boot loader writes them. Layout: Linux Documentation/arch/x86/boot.rst ("THE REAL-MODE
// KERNEL HEADER", "DETAILS OF HEADER FIELDS") and Documentation/arch/x86/zero-page.rst.
// Defined here rather than taken from <asm/bootparam.h> so the offsets sit next to the spec
// text; boot_params_test.cpp checks them against the UAPI header.
#pragma once

#include <cstddef>
#include <cstdint>

namespace kestrel::boot {

// boot.rst: byte offsets in the bzImage file, identical to those in boot_params.
inline constexpr uint64_t kSetupHeaderOffset = 0x1f1;
inline constexpr uint64_t kBootFlagOffset = 0x1fe;
inline constexpr uint64_t kHeaderLenByteOffset = 0x201;  // "0x0202 + byte value at 0x0201"
inline constexpr uint64_t kHeaderMagicOffset = 0x202;
inline constexpr uint16_t kBootFlag = 0xaa55;
inline constexpr uint32_t kHeaderMagic = 0x53726448;  // "HdrS"
inline constexpr uint8_t kLoaderTypeUndefined = 0xff;  // boot.rst: "type_of_loader ... 0xFF"

// loadflags (boot.rst, offset 0x211).
inline constexpr uint8_t kLoadedHigh = 1u << 0;
inline constexpr uint8_t kCanUseHeap = 1u << 7;
// xloadflags (boot.rst, offset 0x236, protocol 2.12).
inline constexpr uint16_t kXlfKernel64 = 1u << 0;
inline constexpr uint16_t kXlfCanBeLoadedAbove4G = 1u << 1;

// boot.rst "THE REAL-MODE KERNEL HEADER": offsets are from the start of the file / zero page.
struct [[gnu::packed]] SetupHeader {
    uint8_t setup_sects;           // 0x1f1
    uint16_t root_flags;           // 0x1f2
    uint32_t syssize;              // 0x1f4
    uint16_t ram_size;             // 0x1f8
    uint16_t vid_mode;             // 0x1fa
    uint16_t root_dev;             // 0x1fc
    uint16_t boot_flag;            // 0x1fe
    uint16_t jump;                 // 0x200
    uint32_t header;               // 0x202
    uint16_t version;              // 0x206
    uint32_t realmode_swtch;       // 0x208
    uint16_t start_sys_seg;        // 0x20c
    uint16_t kernel_version;       // 0x20e
    uint8_t type_of_loader;        // 0x210
    uint8_t loadflags;             // 0x211
    uint16_t setup_move_size;      // 0x212
    uint32_t code32_start;         // 0x214
    uint32_t ramdisk_image;        // 0x218
    uint32_t ramdisk_size;         // 0x21c
    uint32_t bootsect_kludge;      // 0x220
    uint16_t heap_end_ptr;         // 0x224
    uint8_t ext_loader_ver;        // 0x226
    uint8_t ext_loader_type;       // 0x227
    uint32_t cmd_line_ptr;         // 0x228
    uint32_t initrd_addr_max;      // 0x22c
    uint32_t kernel_alignment;     // 0x230
    uint8_t relocatable_kernel;    // 0x234
    uint8_t min_alignment;         // 0x235
    uint16_t xloadflags;           // 0x236
    uint32_t cmdline_size;         // 0x238
    uint32_t hardware_subarch;     // 0x23c
    uint64_t hardware_subarch_data;  // 0x240
    uint32_t payload_offset;       // 0x248
    uint32_t payload_length;       // 0x24c
    uint64_t setup_data;           // 0x250
    uint64_t pref_address;         // 0x258
    uint32_t init_size;            // 0x260
    uint32_t handover_offset;      // 0x264
    uint32_t kernel_info_offset;   // 0x268
};
static_assert(sizeof(SetupHeader) == 0x26c - kSetupHeaderOffset);

// zero-page.rst: "struct boot_e820_entry", 20 bytes, packed.
struct [[gnu::packed]] BootE820Entry {
    uint64_t addr;  // 0x00
    uint64_t size;  // 0x08
    uint32_t type;  // 0x10
};
static_assert(sizeof(BootE820Entry) == 20);

inline constexpr size_t kZeroPageE820Max = 128;  // E820_MAX_ENTRIES_ZEROPAGE

// zero-page.rst; fields this loader never sets are opaque padding.
struct [[gnu::packed]] BootParams {
    uint8_t screen_info_to_ist_info[0x70];  // 0x000 screen_info, apm_bios_info, tboot_addr, ist_info
    uint64_t acpi_rsdp_addr;                // 0x070 (protocol 2.14)
    uint8_t pad_078[0x48];                  // 0x078 hd0/hd1_info, sys_desc_table, olpc_ofw_header
    uint32_t ext_ramdisk_image;             // 0x0c0
    uint32_t ext_ramdisk_size;              // 0x0c4
    uint32_t ext_cmd_line_ptr;              // 0x0c8
    uint8_t pad_0cc[0x1e8 - 0xcc];          // 0x0cc cc_blob_address, edid_info, efi_info, alt_mem_k
    uint8_t e820_entries;                   // 0x1e8
    uint8_t eddbuf_entries;                 // 0x1e9
    uint8_t edd_mbr_sig_buf_entries;        // 0x1ea
    uint8_t kbd_status;                     // 0x1eb
    uint8_t secure_boot;                    // 0x1ec
    uint8_t pad_1ed[2];                     // 0x1ed
    uint8_t sentinel;                       // 0x1ef: must stay 0 (kernel detects stale loaders by it)
    uint8_t pad_1f0;                        // 0x1f0
    SetupHeader hdr;                        // 0x1f1
    uint8_t pad_26c[0x290 - 0x26c];         // 0x26c room for longer future setup headers
    uint32_t edd_mbr_sig_buffer[16];        // 0x290
    BootE820Entry e820_table[kZeroPageE820Max];  // 0x2d0
    uint8_t pad_cd0[0x1000 - 0xcd0];        // 0xcd0 eddbuf and padding
};
static_assert(sizeof(BootParams) == 0x1000);
static_assert(offsetof(BootParams, acpi_rsdp_addr) == 0x070);
static_assert(offsetof(BootParams, ext_ramdisk_image) == 0x0c0);
static_assert(offsetof(BootParams, ext_cmd_line_ptr) == 0x0c8);
static_assert(offsetof(BootParams, e820_entries) == 0x1e8);
static_assert(offsetof(BootParams, sentinel) == 0x1ef);
static_assert(offsetof(BootParams, hdr) == kSetupHeaderOffset);
static_assert(offsetof(BootParams, e820_table) == 0x2d0);

// The setup header may be copied into boot_params up to here (boot.rst leaves 0x1f1..0x290).
inline constexpr uint64_t kSetupHeaderRoomEnd = 0x290;

}  // namespace kestrel::boot
