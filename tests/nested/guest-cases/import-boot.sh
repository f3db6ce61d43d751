#!/bin/sh
# Guest half of import-boot: two disks kestrel import made from a qcow2 and a VMDK, each an
# ext4 holding one file; both are mounted read-only and the files read.
. /etc/kestrel/guest-lib.sh
mkdir -p /mnt/a /mnt/b
for dev in vda vdb; do
  wait_for "/dev/$dev" || fail "no /dev/$dev"
done
mount -t ext4 -o ro /dev/vda /mnt/a || fail "mount vda failed"
mount -t ext4 -o ro /dev/vdb /mnt/b || fail "mount vdb failed"
value guest.vda.sha256 "$(sha256 /mnt/a/data)"
value guest.vdb.sha256 "$(sha256 /mnt/b/data)"
umount /mnt/a /mnt/b
