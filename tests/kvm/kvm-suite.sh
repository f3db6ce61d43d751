#!/bin/sh
# The kvm suite (tests/kvm/run-kvm-tests, tiny guests) inside the nested test host, for
# machines whose own /dev/kvm cannot run it (none at all, or one that fails a probe guest).
# tools/nested/run-tests --kvm-suite BUILD_DIR adds this case and copies the runner and the
# guest images to /nested/kvm. The runner's own PASS/FAIL lines are the case's output; the
# case passes only if the runner ran every case and all passed.
#@ timeout 400
#@ l1-python
#@ l1-binaries /usr/sbin/mkfs.ext4
#@ expect-line ^kvm suite: \d+ case\(s\) under kestrel
#@ expect-line ^\d+ passed, 0 failed$
#@ reject-line ^SKIPPED: kvm suite
#@ reject-line ^SKIP 
. /nested/case-lib.sh

# O_DIRECT disks need a file system that supports it; L1's /tmp is tmpfs, so the runner gets
# an ext4 file system on a loop device for its images.
mkdir -p /tmp/kvm-fs
truncate -s 256M /tmp/kvm-fs.img
mkfs.ext4 -q -F /tmp/kvm-fs.img || exit 90
dev=$(losetup -f) && losetup "$dev" /tmp/kvm-fs.img || exit 91
mount -t ext4 "$dev" /tmp/kvm-fs || exit 92
export KESTREL_KVM_TMPDIR=/tmp/kvm-fs TMPDIR=/tmp/kvm-fs

python3 /nested/kvm/run-kvm-tests "$KESTREL" /nested/kvm/guests/*.elf
rc=$?
umount /tmp/kvm-fs
losetup -d "$dev"
exit "$rc"
