#!/bin/sh
# Live migration on one host with the tap handed over (issue 9): a real Linux guest (2 vCPUs,
# ext4 on virtio-blk, virtio-net on tap kt7, vsock) streams random data over TCP to L1 and
# appends checksummed records to a file on its disk (guest half: guest-cases/stream-on.sh).
# Both destinations are `kestrel run --incoming` in the same L1 and name the SAME tap kt7:
# the paused source lets go of it and the destination attaches it, so L1's address and the
# open TCP connection stay where they are.
#  1. A failed attempt after the source has paused: the destination is remapped to tap kt8,
#     which another process (socat) holds, so attaching it at DONE fails; the destination
#     refuses the VM, the source takes kt7 and the disk back and the guest carries on.
#  2. The real move: `kestrel migrate` exits 0, the source exits 0 ("migrated").
# The destination asks the guest to announce itself (VIRTIO_NET_F_GUEST_ANNOUNCE) and it does.
# Then L1 tells the guest over vsock; the stream continues to its normal end with every byte
# intact (digests equal, socat exit 0 on both ends: no reset), the records are all there and
# correct, the guest's clock never went backwards, and fsck is clean.
#@ timeout 600
#@ expect-rc 0
#@ expect-value l1.guest.ready == 1
#@ guest-modules virtio_pci virtio_blk virtio_net vsock vmw_vsock_virtio_transport
#@ guest-binaries /usr/sbin/mkfs.ext4 /usr/bin/socat
#@ l1-binaries /usr/bin/socat /usr/sbin/fsck.ext4 /usr/bin/curl
#@ expect-line ^KESTREL-GUEST-CASE-END stream-on rc=0$
#@ reject-line KESTREL-GUEST-MODULE-FAILED
#@ allow-line tap 'kt8' is busy: another process is attached to it
#@ allow-line migration: \d+ rounds without reaching downtime_ms
#@ reject-line soft lockup|rcu_sched self-detected stall|rcu: INFO|EXT4-fs error|I/O error
#@ expect-value l1.kt8.held == 1
#@ expect-value l1.failed.migrate.rc == 1
#@ expect-value l1.failed.dst.rc == 1
#@ expect-value l1.failed.dst.said_busy == 1
#@ expect-value l1.failed.src.phase == failed
#@ expect-value l1.failed.src.took_back == 1
#@ expect-value l1.failed.stream_grew == 1
#@ expect-value l1.migrate.rc == 0
#@ expect-value l1.source.rc == 0
#@ expect-value l1.source.said_migrated == 1
#@ expect-value l1.destination.attached_kt7 == 1
#@ expect-value l1.destination.asked_announce == 1
#@ expect-value l1.destination.guest_announced == 1
#@ expect-value guest.moved.msg == moved-by-l1
#@ expect-value guest.stream.rc == 0
#@ expect-value l1.stream.rc == 0
#@ expect-value l1.stream.sha256 == $guest.stream.sha256
#@ expect-value l1.stream.bytes == $guest.stream.bytes
#@ expect-value guest.stream.bytes > $guest.stream.bytes_at_msg
#@ expect-value guest.records.count > $guest.records.at_msg
#@ expect-value guest.records.same == ok
#@ expect-value guest.records.bad_hash == 0
#@ expect-value guest.records.out_of_order == 0
#@ expect-value guest.clock.backwards == 0
#@ expect-value guest.umount == ok
#@ expect-value l1.fsck.rc == 0
. /nested/case-lib.sh
api=/tmp/mn-a.sock
con=/tmp/mn.console
rm -f "$api" "$con" "$con".* /tmp/mn-*.vsock /tmp/mn-*.mig /tmp/mn-stream
tunctl -t kt7 > /dev/null && tunctl -t kt8 > /dev/null || exit 1
ip addr add 10.0.7.1/24 dev kt7 && ip link set kt7 up && ip link set kt8 up || exit 1
truncate -s 64M /tmp/mn-root.img
timeout 560 socat -u TCP-LISTEN:5007,reuseaddr CREATE:/tmp/mn-stream &
stream_pid=$!

token="kestrel.token=migrate-net-$(head -c 4 /dev/urandom | od -An -tx1 | tr -d ' \n')"
args="console=ttyS0 reboot=k panic=-1 $token quiet kestrel.case=stream-on"
echo "NESTED-CMDLINE $args"
read -r t0 _ < /proc/uptime
"$KESTREL" run --api-sock "$api" --serial "file:$con" --log-level info \
  --kernel "$L2/vmlinuz" --initrd "$L2/initrd.cpio.gz" --cpus 2 --memory 256M \
  --disk /tmp/mn-root.img --net "tap=kt7,mac=52:54:00:12:34:5a" --vsock "cid=3,socket=/tmp/mn-a.vsock" \
  --cmdline "$args" > /tmp/mn-a.log 2>&1 &
src=$!
for i in $(seq 1200); do grep -q KESTREL-STREAM-READY "$con" 2>/dev/null && break; sleep 0.25; done
# A guest that never got there (a nested host too slow to boot it) fails here, by name,
# instead of being snapshotted or moved half-booted.
nested_value l1.guest.ready "$(grep -c KESTREL-STREAM-READY "$con")"

# 1. Refused at DONE: the destination's tap is held by someone else.
timeout 500 socat -u TUN,tun-name=kt8,tun-type=tap,iff-no-pi OPEN:/dev/null &
holder=$!
for i in $(seq 40); do [ "$(cat /sys/class/net/kt8/carrier 2>/dev/null)" = 1 ] && break; sleep 0.25; done
nested_value l1.kt8.held "$(cat /sys/class/net/kt8/carrier 2>/dev/null)"
"$KESTREL" run --incoming unix:/tmp/mn-bad.mig --remap kt7=kt8 --remap /tmp/mn-a.vsock=/tmp/mn-bad.vsock \
  --serial "file:$con.bad" --log-level info > /tmp/mn-bad.log 2>&1 &
bad=$!
for i in $(seq 100); do [ -S /tmp/mn-bad.mig ] && break; sleep 0.1; done
"$KESTREL" migrate --api-sock "$api" --to unix:/tmp/mn-bad.mig
nested_value l1.failed.migrate.rc $?
wait "$bad"
nested_value l1.failed.dst.rc $?
kill "$holder" 2>/dev/null
echo "--- refusing destination's log"; cat /tmp/mn-bad.log
nested_value l1.failed.dst.said_busy "$(grep -c "tap 'kt8' is busy" /tmp/mn-bad.log)"
phase=$(curl -s --unix-socket "$api" http://localhost/migrate | sed -n 's/.*"phase": *"\([a-z-]*\)".*/\1/p')
nested_value l1.failed.src.phase "$phase"
nested_value l1.failed.src.took_back "$(grep -c "virtio-net: tap 'kt7' attached" /tmp/mn-a.log)"
s1=$(wc -c < /tmp/mn-stream)
sleep 5
s2=$(wc -c < /tmp/mn-stream)
echo "l1: stream $s1 -> $s2 bytes over 5 s after the failed attempt"
nested_value l1.failed.stream_grew "$([ "$s2" -gt "$s1" ] && echo 1 || echo 0)"

# 2. The move, to a destination on the same tap.
"$KESTREL" run --incoming unix:/tmp/mn-b.mig --remap /tmp/mn-a.vsock=/tmp/mn-b.vsock \
  --serial "file:$con.2" --log-level info > /tmp/mn-b.log 2>&1 &
dst=$!
for i in $(seq 100); do [ -S /tmp/mn-b.mig ] && break; sleep 0.1; done
"$KESTREL" migrate --api-sock "$api" --to unix:/tmp/mn-b.mig
nested_value l1.migrate.rc $?
wait "$src"
nested_value l1.source.rc $?
nested_value l1.source.said_migrated "$(grep -c 'the VM migrated to unix:/tmp/mn-b.mig' /tmp/mn-a.log)"
echo "--- source kestrel log"; cat /tmp/mn-a.log; echo "--- source console"; cat "$con"
vsock_tell /tmp/mn-b.vsock 1234 moved-by-l1
wait "$dst"
rc=$?
read -r t1 _ < /proc/uptime
echo "NESTED-KESTREL-EXIT rc=$rc seconds=$(awk "BEGIN { printf \"%.2f\", $t1 - $t0 }") to_init_seconds=-1"
cat "$con.2"
echo "--- destination kestrel log"; cat /tmp/mn-b.log
nested_value l1.destination.attached_kt7 "$(grep -c "virtio-net: tap 'kt7' attached" /tmp/mn-b.log)"
# VIRTIO_NET_F_GUEST_ANNOUNCE: the destination set VIRTIO_NET_S_ANNOUNCE, and Linux's
# virtio_net sent its gratuitous ARP (netdev_notify_peers) and acked on the control queue.
nested_value l1.destination.asked_announce "$(grep -c "virtio-net: asked the guest to announce itself on tap 'kt7'" /tmp/mn-b.log)"
nested_value l1.destination.guest_announced "$(grep -c "virtio-net: the guest announced itself on tap 'kt7'" /tmp/mn-b.log)"
wait "$stream_pid"
nested_value l1.stream.rc $?
nested_value l1.stream.bytes "$(wc -c < /tmp/mn-stream)"
nested_value l1.stream.sha256 "$(nested_sha256 /tmp/mn-stream)"
fsck.ext4 -fn /tmp/mn-root.img
nested_value l1.fsck.rc $?
ip link del kt7 2>/dev/null; ip link del kt8 2>/dev/null
rm -f /tmp/mn-root.img "$con" "$con".* /tmp/mn-stream /tmp/mn-*.vsock /tmp/mn-*.mig
exit "$rc"
