#!/bin/sh
# First guest half of blk-discard: ext4 on the disk with one 24 MiB random file, synced.
. /etc/kestrel/guest-lib.sh
wait_for /dev/vda || fail "no /dev/vda (block devices: $(ls /sys/block | tr '\n' ' '))"
value guest.discard_max_bytes "$(cat /sys/block/vda/queue/discard_max_bytes)"
# WRITE_ZEROES first, on the last MiB (mkfs below rewrites the rest): random data, then
# BLKZEROOUT through util-linux's blkdiscard -z, read back with the page cache bypassed.
value guest.write_zeroes_max_bytes "$(cat /sys/block/vda/queue/write_zeroes_max_bytes)"
head -c 1048576 /dev/urandom | dd of=/dev/vda bs=1M seek=127 oflag=direct conv=fsync 2>/dev/null ||
  fail "writing the zero-test range failed"
value guest.zeroed.before.sha256 "$(dd if=/dev/vda bs=1M skip=127 count=1 iflag=direct 2>/dev/null | sha256sum | cut -d' ' -f1)"
/usr/sbin/blkdiscard -z -o $((127 << 20)) -l 1048576 /dev/vda || fail "blkdiscard -z failed"
value guest.zeroed.sha256 "$(dd if=/dev/vda bs=1M skip=127 count=1 iflag=direct 2>/dev/null | sha256sum | cut -d' ' -f1)"
/usr/sbin/mkfs.ext4 -q -F /dev/vda || fail "mkfs.ext4 failed"
mkdir -p /mnt
mount -t ext4 /dev/vda /mnt || fail "mount failed"
head -c 25165824 /dev/urandom > /mnt/big || fail "writing /mnt/big failed"
sync || fail "sync failed"
value guest.big.sha256 "$(sha256 /mnt/big)"
umount /mnt || fail "umount failed"
