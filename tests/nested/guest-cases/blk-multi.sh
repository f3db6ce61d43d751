#!/bin/sh
# Guest half of blk-multi: two disks, told apart by their flags and serial; read the file on
# the read-only one, write 8 MiB through the page cache to the O_DIRECT-backed one, drop the
# cache and read it back from the device; then O_DIRECT reads from each vCPU (one queue each).
. /etc/kestrel/guest-lib.sh
wait_for /dev/vda || fail "no /dev/vda (block devices: $(ls /sys/block | tr '\n' ' '))"
wait_for /dev/vdb || fail "no /dev/vdb (block devices: $(ls /sys/block | tr '\n' ' '))"
value guest.vda.ro "$(cat /sys/block/vda/ro)"
value guest.vdb.ro "$(cat /sys/block/vdb/ro)"
value guest.vdb.serial "$(cat /sys/block/vdb/serial 2>/dev/null)"
value guest.vdb.queues "$(ls /sys/block/vdb/mq | wc -l)"
mkdir -p /mnt
mount -t ext4 -o ro /dev/vda /mnt || fail "mount of vda failed"
value guest.vda.data.sha256 "$(sha256 /mnt/data)"
umount /mnt || fail "umount failed"
head -c 8388608 /dev/urandom > /tmp/block
value guest.vdb.written.sha256 "$(sha256 /tmp/block)"
dd if=/tmp/block of=/dev/vdb bs=1048576 conv=fsync 2>/dev/null || fail "writing vdb failed"
echo 3 > /proc/sys/vm/drop_caches
dd if=/dev/vdb of=/tmp/back bs=1048576 count=8 2>/dev/null || fail "reading vdb failed"
value guest.vdb.readback.sha256 "$(sha256 /tmp/back)"
# One queue per vCPU: 32 O_DIRECT reads from each vCPU must reach kestrel on two queues.
for cpu in 0 1; do
  taskset "$((1 << cpu))" dd if=/dev/vdb of=/dev/null bs=4096 count=32 iflag=direct 2>/dev/null
  value "guest.vdb.cpu$cpu.dd.rc" $?
done
