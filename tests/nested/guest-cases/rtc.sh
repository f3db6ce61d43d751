#!/bin/sh
# Guest half of the RTC check: Linux's rtc_cmos bound kestrel's CMOS RTC (declared in the DSDT
# as PNP0B00) and reads the wall-clock time from it; L1 brackets the boot with its own clock.
. /etc/kestrel/guest-lib.sh
GUEST_DMESG='rtc|cmos'
wait_for /sys/class/rtc/rtc0/since_epoch || fail "no /sys/class/rtc/rtc0"
value guest.rtc.name "$(cat /sys/class/rtc/rtc0/name)"
value guest.rtc.epoch "$(cat /sys/class/rtc/rtc0/since_epoch)"
hwclock -r -u > /tmp/hwclock 2>&1 || fail "hwclock -r failed: $(cat /tmp/hwclock)"
value guest.hwclock.ok 1
# The console's UART interrupt goes through kestrel's userspace IOAPIC (split irqchip): pin 4,
# edge, and it has fired (init's output is interrupt-driven once /dev/console is open).
irq=$(grep -m1 ' ttyS0$' /proc/interrupts) || fail "no ttyS0 line in /proc/interrupts"
value guest.ttyS0.pin "$(echo "$irq" | awk '{ print $(NF - 2), $(NF - 1) }')"
value guest.ttyS0.count "$(echo "$irq" | awk '{ n = 0; for (i = 2; i <= NF - 3; i++) n += $i; print n }')"
