#!/bin/sh
# Snapshot of a real Linux guest, restored in a new kestrel process (issue 9). The guest (2
# vCPUs) has ext4 on a virtio-blk root drive, virtio-net on a tap, vsock, virtio-rng and a
# virtio-balloon with free page reporting (its queues saved and restored with the rest); a
# long-running worker appends to a file on that ext4 and samples /proc/uptime, a writer keeps
# fsync'ed writes in flight (guest half: guest-cases/carry-on.sh). L1 takes a
# snapshot (`kestrel snapshot --keep-paused`), ends that kestrel (SIGTERM), and runs
# `kestrel run --restore` on the two files. The restored guest must carry on where it was:
# the same worker process alive and still counting, its clock never backwards, a file
# synced before and one still in the page cache at the snapshot both intact, new writes read
# back, virtio-net and virtio-rng working, and the vsock listener reachable again after the
# transport reset (the guest's vsock connections do not survive a restore). L1 then runs
# fsck on the image: clean.
#@ timeout 420
#@ expect-rc 0
#@ expect-value l1.guest.ready == 1
#@ guest-modules virtio_pci virtio_blk virtio_net virtio-rng vsock vmw_vsock_virtio_transport virtio_balloon
#@ guest-binaries /usr/sbin/mkfs.ext4 /usr/bin/socat
#@ l1-binaries /usr/bin/socat /usr/sbin/fsck.ext4
#@ expect-line ^KESTREL-GUEST-CASE-END carry-on rc=0$
#@ reject-line KESTREL-GUEST-MODULE-FAILED
#@ allow-line ^kestrel: error: stopped by signal 15 \(exit code 143\)$
#@ reject-line soft lockup|rcu_sched self-detected stall|rcu: INFO|EXT4-fs error|I/O error
#@ expect-value l1.snapshot.rc == 0
#@ expect-value l1.source.stopped == 1
#@ expect-value l1.restore.vsock_reset == 1
#@ expect-value l1.restore.guest_announced == 1
#@ expect-value guest.restored.msg == restored-by-l1
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
#@ expect-value l1.restore.balloon == 1
. /nested/case-lib.sh
api=/tmp/snap.sock
con=/tmp/snap.console
sock=/tmp/snap.vsock
tap=kt4
rm -f "$api" "$con" "$sock" /tmp/snap.state /tmp/snap.mem
tunctl -t "$tap" > /dev/null || exit 1
ip addr add 10.0.4.1/24 dev "$tap" && ip link set "$tap" up || exit 1
truncate -s 64M /tmp/snap-root.img
timeout 400 socat -u TCP-LISTEN:5005,reuseaddr CREATE:/tmp/snap-net &
net_pid=$!

token="kestrel.token=snapshot-restore-$(head -c 4 /dev/urandom | od -An -tx1 | tr -d ' \n')"
args="console=ttyS0 reboot=k panic=-1 $token quiet kestrel.case=carry-on"
echo "NESTED-CMDLINE $args"
"$KESTREL" run --api-sock "$api" --serial "file:$con" --log-level info \
  --kernel "$L2/vmlinuz" --initrd "$L2/initrd.cpio.gz" --cpus 2 --memory 256M \
  --disk /tmp/snap-root.img --net "tap=$tap,mac=52:54:00:12:34:57" --vsock "cid=3,socket=$sock" --rng \
  --free-page-reporting --cmdline "$args" > /tmp/snap-source.log 2>&1 &
kpid=$!
for i in $(seq 1200); do grep -q KESTREL-CARRY-ON-READY "$con" 2>/dev/null && break; sleep 0.25; done
# A guest that never got there (a nested host too slow to boot it) fails here, by name,
# instead of being snapshotted or moved half-booted.
nested_value l1.guest.ready "$(grep -c KESTREL-CARRY-ON-READY "$con")"
t0=$(cut -d' ' -f1 /proc/uptime)
"$KESTREL" snapshot --api-sock "$api" --keep-paused /tmp/snap.state /tmp/snap.mem
nested_value l1.snapshot.rc $?
echo "l1: snapshot took $(awk -v a="$t0" -v b="$(cut -d' ' -f1 /proc/uptime)" 'BEGIN { printf "%.2f", b - a }') s;" \
  "state $(stat -c %s /tmp/snap.state) bytes, memory $(du -k /tmp/snap.mem | cut -f1) KiB allocated"
kill -TERM "$kpid"
wait "$kpid"
nested_value l1.source.stopped $(( $? == 143 ))
echo "--- source kestrel log (SIGTERM ended it: 143)"; cat /tmp/snap-source.log; echo "--- source console"; cat "$con"

# The same guest, restored in a new kestrel; the console continues in a second file.
rm -f "$api"
read -r t0 _ < /proc/uptime
"$KESTREL" run --restore /tmp/snap.state --restore-mem /tmp/snap.mem --api-sock "$api" \
  --serial "file:$con.2" --log-level info > /tmp/snap-restored.log 2>&1 &
kpid=$!
# Tell the guest it was restored: its vsock listener (up before the snapshot) answers again.
vsock_tell "$sock" 1234 restored-by-l1
wait "$kpid"
rc=$?
read -r t1 _ < /proc/uptime
echo "NESTED-KESTREL-EXIT rc=$rc seconds=$(awk "BEGIN { printf \"%.2f\", $t1 - $t0 }") to_init_seconds=-1"
cat "$con.2"
cat /tmp/snap-restored.log
nested_value l1.restore.vsock_reset "$(grep -c 'transport reset sent' /tmp/snap-restored.log)"
nested_value l1.restore.balloon "$(grep -c 'virtio-balloon: PCI' /tmp/snap-restored.log)"
# The restored guest announces itself (VIRTIO_NET_F_GUEST_ANNOUNCE): it may be on another host.
nested_value l1.restore.guest_announced "$(grep -c "virtio-net: the guest announced itself on tap '$tap'" /tmp/snap-restored.log)"
kill "$net_pid" 2>/dev/null
nested_value l1.net.msg "$(cat /tmp/snap-net 2>/dev/null)"
fsck.ext4 -fn /tmp/snap-root.img
nested_value l1.fsck.rc $?
ip link del "$tap" 2>/dev/null || tunctl -d "$tap" > /dev/null
rm -f /tmp/snap-root.img /tmp/snap.state /tmp/snap.mem "$con" "$con.2" /tmp/snap-net "$sock"
exit "$rc"
