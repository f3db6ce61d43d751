#!/bin/sh
# Guest half of rng: the hw_random core picked virtio_rng, and /dev/hwrng delivers 1024 bytes
# that look random (nearly every byte value present; a stuck or zero source gives one).
. /etc/kestrel/guest-lib.sh
GUEST_DMESG='virtio|pci|rng|random'
wait_for /sys/class/misc/hw_random/rng_current || fail "no hw_random device"
value guest.rng_current "$(cat /sys/class/misc/hw_random/rng_current)"
value guest.rng_available "$(cat /sys/class/misc/hw_random/rng_available)"
head -c 1024 /dev/hwrng > /tmp/rng || fail "reading /dev/hwrng failed"
value guest.rng.bytes "$(stat -c %s /tmp/rng)"
value guest.rng.distinct "$(od -An -v -tx1 /tmp/rng | tr -s ' ' '\n' | grep . | sort -u | wc -l)"
value guest.rng.sha256 "$(sha256 /tmp/rng)"
head -c 1024 /dev/hwrng > /tmp/rng2 || fail "second read of /dev/hwrng failed"
value guest.rng2.sha256 "$(sha256 /tmp/rng2)"
