#!/bin/sh
# Guest half of boot-pit (kestrel --pit): the console's interrupt through KVM's in-kernel
# IOAPIC, and virtio-rng's MSI-X next to the in-kernel irqchip's routes.
. /etc/kestrel/guest-lib.sh
GUEST_DMESG='virtio|pci|rng|8259|IOAPIC|ttyS0'
irq=$(grep -m1 ' ttyS0$' /proc/interrupts) || fail "no ttyS0 line in /proc/interrupts"
value guest.ttyS0.pin "$(echo "$irq" | awk '{ print $(NF - 2), $(NF - 1) }')"
value guest.ttyS0.count "$(echo "$irq" | awk '{ n = 0; for (i = 2; i <= NF - 3; i++) n += $i; print n }')"
wait_for /sys/class/misc/hw_random/rng_current || fail "no hw_random device"
value guest.rng_current "$(cat /sys/class/misc/hw_random/rng_current)"
head -c 1024 /dev/hwrng > /tmp/rng || fail "reading /dev/hwrng failed"
value guest.rng.bytes "$(stat -c %s /tmp/rng)"
