#!/bin/sh
# virtio-blk read-only (VIRTIO_BLK_F_RO): L1 makes an ext4 image holding one random file and
# gives it to the guest with ,ro. The guest must see ro=1, fail a raw O_DIRECT write and a
# file creation, get a read-only mount, and read the file intact; the image's digest must not
# change across the run (no write reached it, not even a journal replay or superblock update).
#@ timeout 240
#@ expect-rc 0
#@ guest-modules virtio_pci virtio_blk
#@ l1-binaries /usr/sbin/mkfs.ext4 /usr/sbin/debugfs
#@ expect-line ^KESTREL-GUEST-CASE-END blk-ro rc=0$
#@ reject-line KESTREL-GUEST-MODULE-FAILED
#@ expect-value guest.ro == 1
#@ expect-value guest.rawwrite.rc != 0
#@ expect-value guest.touch.rc != 0
#@ expect-value guest.mount.mode == ro
#@ expect-value guest.data.sha256 == $l1.data.sha256
#@ expect-value l1.image.after == $l1.image.before
# kestrel's counters: the guest read through the device with no I/O error. (Its raw write
# never reaches kestrel: the guest kernel refuses to open a read-only disk for writing.)
#@ expect-value kestrel.blk0.reads >= 1
#@ expect-value kestrel.blk0.io_errors == 0
. /nested/case-lib.sh
img=/tmp/blk-ro.img
rm -f "$img"
truncate -s 64M "$img"
mkfs.ext4 -q -F "$img" || exit 1
head -c 2000000 /dev/urandom > /tmp/data
debugfs -w -R "write /tmp/data data" "$img" 2>&1 | grep -v '^debugfs ' | sed 's/^/l1-debugfs: /'
nested_value l1.data.sha256 "$(nested_sha256 /tmp/data)"
nested_value l1.image.before "$(nested_sha256 "$img")"
boot_guest --timeout 220 --append "quiet kestrel.case=blk-ro" \
  --kernel "$L2/vmlinuz" --initrd "$L2/initrd.cpio.gz" --cpus 1 --memory 256M \
  --disk "$img,ro"
rc=$?
nested_value l1.image.after "$(nested_sha256 "$img")"
rm -f "$img" /tmp/data
exit "$rc"
