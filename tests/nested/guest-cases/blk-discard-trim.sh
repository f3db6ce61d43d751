#!/bin/sh
# Second guest half of blk-discard (a new boot on the same image): the big file is still
# there and intact, then it is deleted and the free space trimmed (FITRIM -> DISCARD requests).
. /etc/kestrel/guest-lib.sh
wait_for /dev/vda || fail "no /dev/vda (block devices: $(ls /sys/block | tr '\n' ' '))"
mkdir -p /mnt
mount -t ext4 /dev/vda /mnt || fail "mount failed"
value guest.big.sha256.boot2 "$(sha256 /mnt/big)"
rm /mnt/big || fail "rm failed"
sync
out=$(fstrim -v /mnt 2>&1)
rc=$?
echo "fstrim: $out"
[ "$rc" -eq 0 ] || fail "fstrim failed (rc $rc)"
# busybox and util-linux both say "/mnt: N bytes trimmed"
value guest.trimmed_bytes "$(echo "$out" | sed -n 's/.*: \([0-9][0-9]*\) bytes trimmed.*/\1/p')"
umount /mnt || fail "umount failed"
