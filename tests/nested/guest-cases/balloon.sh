#!/bin/sh
# Guest half of balloon: virtio_balloon binds with free page reporting; 96 MiB written to a
# tmpfs file and deleted become free page blocks, which Linux reports about 2 s later
# (kestrel gives them back to the host: its counters at exit); memory reused afterwards
# still holds what is written to it.
. /etc/kestrel/guest-lib.sh
GUEST_DMESG='virtio|balloon|pci'
wait_for /sys/bus/virtio/drivers/virtio_balloon || fail "virtio_balloon did not bind"
value guest.balloon.bound "$(ls /sys/bus/virtio/drivers/virtio_balloon | grep -c '^virtio')"
# The driver accepted VIRTIO_BALLOON_F_REPORTING (bit 5 of the features string).
value guest.balloon.reporting "$(cut -c6 /sys/bus/virtio/drivers/virtio_balloon/virtio*/features)"
mkdir -p /tmp/bl && mount -t tmpfs -o size=128m tmpfs /tmp/bl || fail "tmpfs"
dd if=/dev/zero of=/tmp/bl/fill bs=1M count=96 2>/dev/null || fail "writing 96 MiB"
value guest.balloon.memfree_full_kb "$(sed -n 's/^MemFree: *\([0-9]*\) kB/\1/p' /proc/meminfo)"
rm /tmp/bl/fill
sleep 8  # page reporting runs 2 s after pages are freed, in rounds
value guest.balloon.memfree_after_kb "$(sed -n 's/^MemFree: *\([0-9]*\) kB/\1/p' /proc/meminfo)"
yes kestrel-balloon | head -c 67108864 > /tmp/bl/again || fail "writing 64 MiB again"
value guest.balloon.reuse_ok "$([ "$(sha256 /tmp/bl/again)" = "$(yes kestrel-balloon | head -c 67108864 | sha256sum | cut -d' ' -f1)" ] && echo 1 || echo 0)"
rm /tmp/bl/again
