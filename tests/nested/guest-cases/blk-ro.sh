#!/bin/sh
# Guest half of blk-ro: a disk given with ,ro. The kernel must see it read-only, refuse a raw
# write and a read-write mount, and still read the file L1 put on it.
. /etc/kestrel/guest-lib.sh
wait_for /dev/vda || fail "no /dev/vda (block devices: $(ls /sys/block | tr '\n' ' '))"
value guest.ro "$(cat /sys/block/vda/ro)"
head -c 4096 /dev/urandom > /tmp/block
dd if=/tmp/block of=/dev/vda bs=4096 count=1 seek=100 oflag=direct conv=fsync 2>/dev/null
value guest.rawwrite.rc $?
mkdir -p /mnt
# busybox mount falls back to read-only when the device is write-protected; /proc/mounts says
# what was granted.
mount -t ext4 -o rw /dev/vda /mnt 2>&1 || mount -t ext4 -o ro /dev/vda /mnt || fail "mount failed"
value guest.mount.mode "$(awk '$1 == "/dev/vda" { split($4, o, ","); print o[1] }' /proc/mounts)"
touch /mnt/new-file 2>/dev/null
value guest.touch.rc $?
value guest.data.sha256 "$(sha256 /mnt/data)"
umount /mnt || fail "umount failed"
