#!/bin/sh
# The same kernel as an ELF vmlinux entered through its Xen PVH note (32-bit protected mode,
# EBX = hvm_start_info), 2 vCPUs, 512 MiB; same checks as boot-bzimage.
#@ timeout 300
#@ expect-rc 0
#@ expect-guest cpus=2
#@ expect-guest-range memtotal_kb 400000 524288
#@ expect-cmdline
. /nested/case-lib.sh
boot_guest --timeout 280 --kernel "$L2/vmlinux" --initrd "$L2/initrd.cpio.gz" --cpus 2 --memory 512M
