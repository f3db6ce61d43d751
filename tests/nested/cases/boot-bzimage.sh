#!/bin/sh
# The Debian cloud bzImage through the 64-bit Linux boot protocol, 2 vCPUs, 512 MiB: the guest
# reaches /init, sees both CPUs, about 512 MiB and exactly our command line, then powers off.
#@ timeout 300
#@ expect-rc 0
#@ expect-guest cpus=2
#@ expect-guest-range memtotal_kb 400000 524288
#@ expect-cmdline
. /nested/case-lib.sh
boot_guest --timeout 280 --kernel "$L2/vmlinuz" --initrd "$L2/initrd.cpio.gz" --cpus 2 --memory 512M
