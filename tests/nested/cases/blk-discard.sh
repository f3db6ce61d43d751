#!/bin/sh
# virtio-blk DISCARD: boot 1 makes ext4 on a sparse 128 MiB image and fills a 24 MiB file;
# boot 2 (same image) checks the file survived, deletes it and runs fstrim. The space the image
# occupies in L1 (allocated blocks, du -k) must grow with the file and shrink by most of it
# after the trim; fsck must be clean after each boot.
#@ timeout 300
#@ expect-rc 0
#@ guest-modules virtio_pci virtio_blk
#@ guest-binaries /usr/sbin/mkfs.ext4
#@ l1-binaries /usr/sbin/fsck.ext4
#@ expect-line ^KESTREL-GUEST-CASE-END blk-discard-fill rc=0$
#@ expect-line ^KESTREL-GUEST-CASE-END blk-discard-trim rc=0$
#@ reject-line KESTREL-GUEST-MODULE-FAILED
#@ expect-value guest.discard_max_bytes > 0
#@ expect-value guest.big.sha256.boot2 == $guest.big.sha256
#@ expect-value l1.fsck.filled.rc == 0
#@ expect-value l1.fsck.trimmed.rc == 0
#@ expect-value l1.alloc.filled_kb >= 24576
#@ expect-value guest.trimmed_bytes >= 25165824
#@ expect-value l1.alloc.trimmed_kb < $l1.alloc.filled_kb
#@ expect-value l1.alloc.freed_kb >= 20480
# WRITE_ZEROES (virtio 1.2 §5.2.6): blkdiscard -z on a range the guest filled with random
# data first; the guest reads zeros back (O_DIRECT, the page cache bypassed) and the
# request reached kestrel as WRITE_ZEROES. fstrim's DISCARDs and the syncs' FLUSHes too.
#@ guest-binaries /usr/sbin/blkdiscard
#@ expect-value guest.zeroed.sha256 == $l1.zeros.sha256
#@ expect-value guest.zeroed.before.sha256 != $l1.zeros.sha256
#@ expect-value kestrel.blk0.write_zeroes >= 1
#@ expect-value kestrel.blk0.flushes >= 1
#@ expect-value kestrel.run2.blk0.discards >= 1
#@ expect-value kestrel.run2.blk0.flushes >= 1
#@ expect-value kestrel.blk0.io_errors == 0
#@ expect-value kestrel.run2.blk0.io_errors == 0
. /nested/case-lib.sh
img=/tmp/blk-discard.img
rm -f "$img"
truncate -s 128M "$img"
nested_value l1.alloc.empty_kb "$(nested_alloc_kb "$img")"
head -c 1048576 /dev/zero > /tmp/zeros
nested_value l1.zeros.sha256 "$(nested_sha256 /tmp/zeros)"
rm -f /tmp/zeros
boot_guest --timeout 170 --append "quiet kestrel.case=blk-discard-fill" \
  --kernel "$L2/vmlinuz" --initrd "$L2/initrd.cpio.gz" --cpus 1 --memory 256M --disk "$img"
rc1=$?
filled=$(nested_alloc_kb "$img")
nested_value l1.alloc.filled_kb "$filled"
fsck.ext4 -n -f "$img" > /tmp/fsck.out 2>&1
nested_value l1.fsck.filled.rc $?
sed 's/^/l1-fsck: /' /tmp/fsck.out
boot_guest --timeout 170 --append "quiet kestrel.case=blk-discard-trim" \
  --kernel "$L2/vmlinuz" --initrd "$L2/initrd.cpio.gz" --cpus 1 --memory 256M --disk "$img"
rc2=$?
trimmed=$(nested_alloc_kb "$img")
nested_value l1.alloc.trimmed_kb "$trimmed"
nested_value l1.alloc.freed_kb $((filled - trimmed))
fsck.ext4 -n -f "$img" > /tmp/fsck.out 2>&1
nested_value l1.fsck.trimmed.rc $?
sed 's/^/l1-fsck: /' /tmp/fsck.out
rm -f "$img"
[ "$rc1" -eq 0 ] || exit "$rc1"
exit "$rc2"
