#!/bin/sh
# First guest half of blk-discard: ext4 on the disk with one 24 MiB random file, synced.
. /etc/kestrel/guest-lib.sh
wait_for /dev/vda || fail "no /dev/vda (block devices: $(ls /sys/block | tr '\n' ' '))"
value guest.discard_max_bytes "$(cat /sys/block/vda/queue/discard_max_bytes)"
/usr/sbin/mkfs.ext4 -q -F /dev/vda || fail "mkfs.ext4 failed"
mkdir -p /mnt
mount -t ext4 /dev/vda /mnt || fail "mount failed"
head -c 25165824 /dev/urandom > /mnt/big || fail "writing /mnt/big failed"
sync || fail "sync failed"
value guest.big.sha256 "$(sha256 /mnt/big)"
umount /mnt || fail "umount failed"
