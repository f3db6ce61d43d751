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
. /nested/case-lib.sh
img=/tmp/blk-discard.img
rm -f "$img"
truncate -s 128M "$img"
nested_value l1.alloc.empty_kb "$(nested_alloc_kb "$img")"
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
