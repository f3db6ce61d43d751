#!/bin/sh
# virtio-blk under a real filesystem: the guest (2 vCPUs, so 2 request queues) makes ext4 on a
# sparse 128 MiB image and writes three random files; L1 then runs fsck.ext4 on the image and
# pulls the files out with debugfs. Digests and sizes from both sides must agree, fsck must be
# clean, and the guest must have read the serial given on the command line (GET_ID).
#@ timeout 300
#@ expect-rc 0
#@ guest-modules virtio_pci virtio_blk
#@ guest-binaries /usr/sbin/mkfs.ext4
#@ l1-binaries /usr/sbin/fsck.ext4 /usr/sbin/debugfs
#@ expect-line ^KESTREL-GUEST-CASE-END blk-ext4 rc=0$
#@ reject-line KESTREL-GUEST-MODULE-FAILED
#@ expect-value guest.serial == kestrel-disk0
#@ expect-value guest.queues == 2
#@ expect-value guest.size_sectors == 262144
#@ expect-value guest.umount == ok
#@ expect-value l1.fsck.rc == 0
#@ expect-value guest.f1.sha256 =~ [0-9a-f]{64}
#@ expect-value guest.f1.sha256 != $guest.f2.sha256
#@ expect-value guest.f1.sha256 == $l1.f1.sha256
#@ expect-value guest.f2.sha256 == $l1.f2.sha256
#@ expect-value guest.f3.sha256 == $l1.f3.sha256
#@ expect-value guest.f1.size == $l1.f1.size
#@ expect-value guest.f2.size == $l1.f2.size
#@ expect-value guest.f3.size == $l1.f3.size
# kestrel's counters at exit: the guest's syncs reached the device as FLUSH requests (each
# an fsync of the image, completed OK: no I/O errors), and writes and reads went through it.
#@ expect-value kestrel.blk0.flushes >= 1
#@ expect-value kestrel.blk0.writes >= 1
#@ expect-value kestrel.blk0.reads >= 1
#@ expect-value kestrel.blk0.io_errors == 0
. /nested/case-lib.sh
img=/tmp/blk-ext4.img
rm -f "$img"
truncate -s 128M "$img"
boot_guest --timeout 280 --append "quiet kestrel.case=blk-ext4" \
  --kernel "$L2/vmlinuz" --initrd "$L2/initrd.cpio.gz" --cpus 2 --memory 256M \
  --disk "$img,serial=kestrel-disk0"
rc=$?
fsck.ext4 -n -f "$img" > /tmp/fsck.out 2>&1
nested_value l1.fsck.rc $?
sed 's/^/l1-fsck: /' /tmp/fsck.out
for i in 1 2 3; do
  rm -f /tmp/f$i
  debugfs -R "dump /f$i /tmp/f$i" "$img" 2>&1 | grep -v '^debugfs ' | sed 's/^/l1-debugfs: /'
  [ -f /tmp/f$i ] || continue
  nested_value l1.f$i.size "$(stat -c %s /tmp/f$i)"
  nested_value l1.f$i.sha256 "$(nested_sha256 /tmp/f$i)"
  rm -f /tmp/f$i
done
rm -f "$img"
exit "$rc"
