// Our spec structs must agree with the kernel's own UAPI definitions.
#include <asm/bootparam.h>
#include <doctest/doctest.h>

#include <cstddef>

#include "boot/loader/boot_params.hpp"

using namespace kestrel::boot;

#define SAME_OFFSET(ours, theirs, field) \
    static_assert(offsetof(ours, field) == offsetof(theirs, field), #field)

SAME_OFFSET(BootParams, boot_params, acpi_rsdp_addr);
SAME_OFFSET(BootParams, boot_params, ext_ramdisk_image);
SAME_OFFSET(BootParams, boot_params, ext_ramdisk_size);
SAME_OFFSET(BootParams, boot_params, ext_cmd_line_ptr);
SAME_OFFSET(BootParams, boot_params, e820_entries);
SAME_OFFSET(BootParams, boot_params, sentinel);
SAME_OFFSET(BootParams, boot_params, hdr);
SAME_OFFSET(BootParams, boot_params, edd_mbr_sig_buffer);
SAME_OFFSET(BootParams, boot_params, e820_table);
SAME_OFFSET(SetupHeader, setup_header, boot_flag);
SAME_OFFSET(SetupHeader, setup_header, header);
SAME_OFFSET(SetupHeader, setup_header, type_of_loader);
SAME_OFFSET(SetupHeader, setup_header, loadflags);
SAME_OFFSET(SetupHeader, setup_header, ramdisk_image);
SAME_OFFSET(SetupHeader, setup_header, heap_end_ptr);
SAME_OFFSET(SetupHeader, setup_header, cmd_line_ptr);
SAME_OFFSET(SetupHeader, setup_header, initrd_addr_max);
SAME_OFFSET(SetupHeader, setup_header, xloadflags);
SAME_OFFSET(SetupHeader, setup_header, cmdline_size);
SAME_OFFSET(SetupHeader, setup_header, pref_address);
SAME_OFFSET(SetupHeader, setup_header, init_size);
SAME_OFFSET(SetupHeader, setup_header, kernel_info_offset);
static_assert(sizeof(SetupHeader) == sizeof(setup_header));
static_assert(sizeof(BootParams) == sizeof(boot_params));
static_assert(sizeof(BootE820Entry) == sizeof(boot_e820_entry));
static_assert(kZeroPageE820Max == E820_MAX_ENTRIES_ZEROPAGE);
static_assert(kCanUseHeap == CAN_USE_HEAP && kXlfKernel64 == XLF_KERNEL_64);

TEST_CASE("boot params: layout matches <asm/bootparam.h> (checked at compile time)") {
    CHECK(offsetof(BootParams, e820_table) == 0x2d0);
}
