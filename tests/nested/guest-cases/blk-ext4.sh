#!/bin/sh
# Guest half of blk-ext4: the virtio disk's identity (GET_ID serial, queue count, size), then
# mkfs.ext4 on it, three files of random data and random length (1-6 MiB), their digests,
# sync and umount. L1 checks the same files out of the image afterwards.
. /etc/kestrel/guest-lib.sh
wait_for /dev/vda || fail "no /dev/vda (block devices: $(ls /sys/block | tr '\n' ' '))"
value guest.serial "$(cat /sys/block/vda/serial 2>/dev/null)"
value guest.queues "$(ls /sys/block/vda/mq | wc -l)"
value guest.size_sectors "$(cat /sys/block/vda/size)"
/usr/sbin/mkfs.ext4 -q -F /dev/vda || fail "mkfs.ext4 failed"
mkdir -p /mnt
mount -t ext4 /dev/vda /mnt || fail "mount failed"
for i in 1 2 3; do
  size=$(random_size 1048576 6291456)
  head -c "$size" /dev/urandom > /mnt/f$i || fail "writing /mnt/f$i failed"
done
sync || fail "sync failed"
# Digests after sync and a cache drop, so they come from the disk, not just the page cache.
echo 3 > /proc/sys/vm/drop_caches
for i in 1 2 3; do
  value guest.f$i.size "$(stat -c %s /mnt/f$i)"
  value guest.f$i.sha256 "$(sha256 /mnt/f$i)"
done
umount /mnt || fail "umount failed"
value guest.umount ok
