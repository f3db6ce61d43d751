#!/bin/sh
# kestrel import: two ext4 file systems made in L1, each with one random file, turned into a
# qcow2 and a VMDK by qemu-img, converted back to raw by `kestrel import` and given to the
# guest read-only; the guest mounts both and reads the files intact. A second import onto an
# existing destination is refused (exit 1) and leaves it as it was.
#@ timeout 300
#@ expect-rc 0
#@ guest-modules virtio_pci virtio_blk
#@ l1-binaries /usr/sbin/mkfs.ext4 /usr/sbin/debugfs /usr/bin/qemu-img
#@ expect-line ^KESTREL-GUEST-CASE-END import-boot rc=0$
#@ reject-line KESTREL-GUEST-MODULE-FAILED
#@ expect-value l1.import.qcow2.rc == 0
#@ expect-value l1.import.vmdk.rc == 0
#@ expect-value l1.import.again.rc == 1
#@ expect-value l1.import.again.unchanged == yes
#@ expect-value l1.qcow2.raw.sha256 == $l1.qcow2.ext4.sha256
#@ expect-value l1.vmdk.raw.sha256 == $l1.vmdk.ext4.sha256
#@ expect-value guest.vda.sha256 == $l1.a.sha256
#@ expect-value guest.vdb.sha256 == $l1.b.sha256
#@ expect-value kestrel.blk0.io_errors == 0
#@ expect-value kestrel.blk1.io_errors == 0
. /nested/case-lib.sh
d=/tmp/import
rm -rf "$d" && mkdir -p "$d"
for x in a b; do
  truncate -s 32M "$d/$x.ext4"
  mkfs.ext4 -q -F "$d/$x.ext4" || exit 1
  head -c "$(awk -v x=$x 'BEGIN { print (x == "a") ? 3000000 : 1234567 }')" /dev/urandom > "$d/$x.data"
  debugfs -w -R "write $d/$x.data data" "$d/$x.ext4" 2>&1 | grep -v '^debugfs ' | sed 's/^/l1-debugfs: /'
  nested_value "l1.$x.sha256" "$(nested_sha256 "$d/$x.data")"
done
qemu-img convert -f raw -O qcow2 "$d/a.ext4" "$d/a.qcow2" || exit 1
qemu-img convert -f raw -O vmdk "$d/b.ext4" "$d/b.vmdk" || exit 1
nested_value l1.qcow2.ext4.sha256 "$(nested_sha256 "$d/a.ext4")"
nested_value l1.vmdk.ext4.sha256 "$(nested_sha256 "$d/b.ext4")"
"$KESTREL" import "$d/a.qcow2" "$d/a.raw"
nested_value l1.import.qcow2.rc $?
"$KESTREL" import "$d/b.vmdk" "$d/b.raw"
nested_value l1.import.vmdk.rc $?
nested_value l1.qcow2.raw.sha256 "$(nested_sha256 "$d/a.raw")"
nested_value l1.vmdk.raw.sha256 "$(nested_sha256 "$d/b.raw")"
before=$(nested_sha256 "$d/a.raw")
"$KESTREL" import "$d/b.vmdk" "$d/a.raw"
nested_value l1.import.again.rc $?
[ "$(nested_sha256 "$d/a.raw")" = "$before" ] && same=yes || same=no
nested_value l1.import.again.unchanged "$same"
rm -f "$d"/*.ext4 "$d"/*.qcow2 "$d"/*.vmdk
boot_guest --timeout 240 --append "quiet kestrel.case=import-boot" \
  --kernel "$L2/vmlinuz" --initrd "$L2/initrd.cpio.gz" --cpus 1 --memory 256M \
  --disk "$d/a.raw,ro" --disk "$d/b.raw,ro"
rc=$?
rm -rf "$d"
exit "$rc"
