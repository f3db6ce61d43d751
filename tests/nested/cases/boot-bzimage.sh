#!/bin/sh
# The Debian cloud bzImage through the 64-bit Linux boot protocol, 2 vCPUs, 512 MiB: the guest
# reaches /init, sees both CPUs, about 512 MiB and exactly our command line, then powers off.
# It also reads the wall-clock time from kestrel's CMOS RTC (rtc_cmos), which must fall
# between L1's clock just before kestrel starts and just after it ends (±5 s).
#@ timeout 300
#@ expect-rc 0
#@ expect-guest cpus=2
#@ expect-guest-range memtotal_kb 400000 524288
#@ expect-cmdline
#@ expect-line ^KESTREL-GUEST-CASE-END rtc rc=0$
#@ expect-value guest.rtc.name =~ rtc_cmos.*
#@ expect-value guest.rtc.epoch >= $l1.clock.lo
#@ expect-value guest.rtc.epoch <= $l1.clock.hi
#@ expect-value guest.hwclock.ok == 1
#@ expect-value guest.ttyS0.pin == IO-APIC 4-edge
#@ expect-value guest.ttyS0.count >= 1
. /nested/case-lib.sh
nested_value l1.clock.lo "$(( $(date +%s) - 5 ))"
boot_guest --timeout 280 --append "kestrel.case=rtc" \
  --kernel "$L2/vmlinuz" --initrd "$L2/initrd.cpio.gz" --cpus 2 --memory 512M
nested_value l1.clock.hi "$(( $(date +%s) + 5 ))"
