#!/bin/sh
# Live migration of a real Linux guest between two kestrel processes in L1 (issue 9). The
# guest (2 vCPUs) has ext4 on a virtio-blk drive, virtio-net on tap kt5, vsock and virtio-rng;
# a worker counts into a file on the ext4 and samples /proc/uptime while a writer keeps
# fsync'ed writes in flight (guest half: guest-cases/carry-on.sh). The destination waits with
# `kestrel run --incoming unix:...`, given another tap (kt6, kt5's MAC) and vsock socket
# through --remap (as another host's layout would need); `kestrel migrate` moves the VM while
# all that runs. The source must exit 0 ("migrated"), and the guest in the destination must
# carry on: the same worker alive and counting, its clock never backwards, files intact, the
# disk handed over (the destination locked the image: the source let go), net (L1's address
# moved to kt6), rng and vsock (after its transport reset) working; fsck clean afterwards.
#@ timeout 420
#@ expect-rc 0
#@ expect-value l1.guest.ready == 1
#@ guest-modules virtio_pci virtio_blk virtio_net virtio-rng vsock vmw_vsock_virtio_transport
#@ guest-binaries /usr/sbin/mkfs.ext4 /usr/bin/socat
#@ l1-binaries /usr/bin/socat /usr/sbin/fsck.ext4
#@ expect-line ^KESTREL-GUEST-CASE-END carry-on rc=0$
#@ reject-line KESTREL-GUEST-MODULE-FAILED
#@ reject-line soft lockup|rcu_sched self-detected stall|rcu: INFO|EXT4-fs error|I/O error
#@ expect-value l1.migrate.rc == 0
#@ expect-value l1.source.rc == 0
#@ expect-value l1.source.said_migrated == 1
#@ expect-value l1.destination.vsock_reset == 1
#@ expect-value guest.restored.msg == migrated-by-l1
#@ expect-value guest.worker.pid_after == $guest.worker.pid_before
#@ expect-value guest.worker.alive == 1
#@ expect-value guest.worker.count_after > $guest.worker.count_before
#@ expect-value guest.clock.backwards == 0
#@ expect-value guest.synced.sha256 == $guest.synced.sha256_before
#@ expect-value guest.cached.sha256 == $guest.cached.sha256_before
#@ expect-value guest.after.readback == ok
#@ expect-value guest.rng.bytes == 512
#@ expect-value l1.net.msg == net-afterwards
#@ expect-value guest.umount == ok
#@ expect-value l1.fsck.rc == 0
. /nested/case-lib.sh
api=/tmp/mig-a.sock
con=/tmp/mig.console
rm -f "$api" "$con" "$con.2" /tmp/mig-a.vsock /tmp/mig-b.vsock /tmp/mig.sock
tunctl -t kt5 > /dev/null && tunctl -t kt6 > /dev/null || exit 1
ip link set kt6 address "$(cat /sys/class/net/kt5/address)"
ip addr add 10.0.4.1/24 dev kt5 && ip link set kt5 up && ip link set kt6 up || exit 1
truncate -s 64M /tmp/mig-root.img
timeout 400 socat -u TCP-LISTEN:5005,reuseaddr CREATE:/tmp/mig-net &
net_pid=$!

token="kestrel.token=migrate-live-$(head -c 4 /dev/urandom | od -An -tx1 | tr -d ' \n')"
args="console=ttyS0 reboot=k panic=-1 $token quiet kestrel.case=carry-on"
echo "NESTED-CMDLINE $args"
"$KESTREL" run --api-sock "$api" --serial "file:$con" --log-level info \
  --kernel "$L2/vmlinuz" --initrd "$L2/initrd.cpio.gz" --cpus 2 --memory 256M \
  --disk /tmp/mig-root.img --net "tap=kt5,mac=52:54:00:12:34:58" --vsock "cid=3,socket=/tmp/mig-a.vsock" --rng \
  --cmdline "$args" > /tmp/mig-a.log 2>&1 &
src=$!
read -r t0 _ < /proc/uptime
"$KESTREL" run --incoming unix:/tmp/mig.sock --remap kt5=kt6 --remap /tmp/mig-a.vsock=/tmp/mig-b.vsock \
  --serial "file:$con.2" --log-level info > /tmp/mig-b.log 2>&1 &
dst=$!
for i in $(seq 1200); do grep -q KESTREL-CARRY-ON-READY "$con" 2>/dev/null && break; sleep 0.25; done
# A guest that never got there (a nested host too slow to boot it) fails here, by name,
# instead of being snapshotted or moved half-booted.
nested_value l1.guest.ready "$(grep -c KESTREL-CARRY-ON-READY "$con")"
"$KESTREL" migrate --api-sock "$api" --to unix:/tmp/mig.sock
nested_value l1.migrate.rc $?
wait "$src"
nested_value l1.source.rc $?
nested_value l1.source.said_migrated "$(grep -c 'the VM migrated to unix:/tmp/mig.sock' /tmp/mig-a.log)"
echo "--- source kestrel log"; cat /tmp/mig-a.log; echo "--- source console"; cat "$con"
# The guest's peer address follows it to the destination's tap.
ip addr del 10.0.4.1/24 dev kt5 && ip addr add 10.0.4.1/24 dev kt6
vsock_tell /tmp/mig-b.vsock 1234 migrated-by-l1
wait "$dst"
rc=$?
read -r t1 _ < /proc/uptime
echo "NESTED-KESTREL-EXIT rc=$rc seconds=$(awk "BEGIN { printf \"%.2f\", $t1 - $t0 }") to_init_seconds=-1"
cat "$con.2"
cat /tmp/mig-b.log
nested_value l1.destination.vsock_reset "$(grep -c 'transport reset sent' /tmp/mig-b.log)"
kill "$net_pid" 2>/dev/null
nested_value l1.net.msg "$(cat /tmp/mig-net 2>/dev/null)"
fsck.ext4 -fn /tmp/mig-root.img
nested_value l1.fsck.rc $?
ip link del kt5 2>/dev/null; ip link del kt6 2>/dev/null
rm -f /tmp/mig-root.img "$con" "$con.2" /tmp/mig-net /tmp/mig-a.vsock /tmp/mig-b.vsock
exit "$rc"
