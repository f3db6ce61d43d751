#!/bin/sh
# Two virtio-blk disks on one guest (--disk given twice): vda read-only with a file L1 put on
# it, vdb writable with ,direct (O_DIRECT back-end), its own serial and 2 queues. The guest must
# tell them apart (ro flag, serial, queue count), read vda's file intact, and write 8 MiB of
# random data to vdb that L1 then finds in vdb's image byte for byte; vda's image must not change.
# L1's /tmp is tmpfs, which (Linux 6.1) refuses O_DIRECT, so vdb is a loop device over the
# image: a block device takes O_DIRECT whatever backs it.
#@ timeout 260
#@ expect-rc 0
#@ guest-modules virtio_pci virtio_blk
#@ l1-binaries /usr/sbin/mkfs.ext4 /usr/sbin/debugfs
#@ expect-line ^KESTREL-GUEST-CASE-END blk-multi rc=0$
#@ reject-line KESTREL-GUEST-MODULE-FAILED
#@ expect-value guest.vda.ro == 1
#@ expect-value guest.vdb.ro == 0
#@ expect-value guest.vdb.serial == kestrel-vdb
#@ expect-value guest.vdb.queues == 2
#@ expect-value guest.vda.data.sha256 == $l1.data.sha256
#@ expect-value guest.vdb.readback.sha256 == $guest.vdb.written.sha256
#@ expect-value l1.vdb.head.sha256 == $guest.vdb.written.sha256
#@ expect-value l1.vda.after == $l1.vda.before
# I/O on each of vdb's two queues: the guest read 32 x 4 KiB with O_DIRECT pinned to each vCPU.
#@ expect-value guest.vdb.cpu0.dd.rc == 0
#@ expect-value guest.vdb.cpu1.dd.rc == 0
#@ expect-value kestrel.blk1.queue_requests[0] >= 32
#@ expect-value kestrel.blk1.queue_requests[1] >= 32
. /nested/case-lib.sh
ro=/tmp/blk-multi-ro.img rw=/tmp/blk-multi-rw.img
rm -f "$ro" "$rw"
truncate -s 32M "$ro"
mkfs.ext4 -q -F "$ro" || exit 1
head -c 1500000 /dev/urandom > /tmp/data
debugfs -w -R "write /tmp/data data" "$ro" 2>&1 | grep -v '^debugfs ' | sed 's/^/l1-debugfs: /'
nested_value l1.data.sha256 "$(nested_sha256 /tmp/data)"
nested_value l1.vda.before "$(nested_sha256 "$ro")"
truncate -s 64M "$rw"
loopdev=/dev/loop0
[ -b "$loopdev" ] || { echo "blk-multi: no $loopdev (loop.ko not loaded in L1)"; exit 1; }
losetup "$loopdev" "$rw" || exit 1
boot_guest --timeout 240 --append "quiet kestrel.case=blk-multi" \
  --kernel "$L2/vmlinuz" --initrd "$L2/initrd.cpio.gz" --cpus 2 --memory 256M \
  --disk "$ro,ro" --disk "$loopdev,direct,serial=kestrel-vdb,queues=2"
rc=$?
losetup -d "$loopdev"
nested_value l1.vda.after "$(nested_sha256 "$ro")"
nested_value l1.vdb.head.sha256 "$(head -c 8388608 "$rw" | sha256sum | cut -d' ' -f1)"
rm -f "$ro" "$rw" /tmp/data
exit "$rc"
