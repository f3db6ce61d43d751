#!/bin/sh
# Guest half of snapshot-restore and migrate-live: ext4 on /dev/vda with one file synced and
# one left in the page cache, a worker that keeps counting into a file on it and samples
# /proc/uptime, a writer that keeps fsync'ed writes in flight, then KESTREL-CARRY-ON-READY;
# after the restore or migration (L1 says so over vsock) everything must carry on.
. /etc/kestrel/guest-lib.sh
GUEST_DMESG='virtio|vd[a-z]|eth0|vsock|EXT4|lockup|rcu|clock'
wait_for /dev/vda || fail "no /dev/vda"
wait_for /sys/class/net/eth0 || fail "no eth0"
wait_for /dev/vsock || fail "no /dev/vsock"
ip link set lo up
ip addr add 10.0.4.2/24 dev eth0 && ip link set eth0 up || fail "eth0 set-up failed"
/usr/sbin/mkfs.ext4 -q -F /dev/vda || fail "mkfs.ext4 failed"
mkdir -p /mnt && mount -t ext4 /dev/vda /mnt || fail "mount failed"
head -c 4194304 /dev/urandom > /mnt/synced && sync || fail "writing /mnt/synced failed"
value guest.synced.sha256_before "$(sha256 /mnt/synced)"
head -c 2097152 /dev/urandom > /mnt/cached || fail "writing /mnt/cached failed"
value guest.cached.sha256_before "$(sha256 /mnt/cached)"
( n=0; prev=0; back=0
  while [ ! -e /tmp/stop ]; do
    n=$((n + 1))
    read -r now _ < /proc/uptime
    back=$(awk -v a="$prev" -v b="$now" -v c="$back" 'BEGIN { print (b < a) ? c + 1 : c }')
    prev=$now
    echo "$n $now $back" > /mnt/count.new && mv /mnt/count.new /mnt/count
    sleep 0.1
  done ) &
worker=$!
( while [ ! -e /tmp/stop ]; do dd if=/dev/zero of=/mnt/busy bs=64k count=64 conv=fsync 2>/dev/null; done ) &
writer=$!
timeout 300 socat -u VSOCK-LISTEN:1234 CREATE:/tmp/msg &
listener=$!
sleep 2
read -r n _ < /mnt/count
value guest.worker.pid_before "$worker"
value guest.worker.count_before "$n"
echo "KESTREL-CARRY-ON-READY"
wait "$listener" || fail "no vsock message from L1 afterwards"
value guest.restored.msg "$(head -n 1 /tmp/msg)"
sleep 1
value guest.worker.pid_after "$worker"
kill -0 "$worker" 2>/dev/null && value guest.worker.alive 1
read -r n _ back < /mnt/count
value guest.worker.count_after "$n"
value guest.clock.backwards "$back"
echo 3 > /proc/sys/vm/drop_caches
value guest.synced.sha256 "$(sha256 /mnt/synced)"
value guest.cached.sha256 "$(sha256 /mnt/cached)"
head -c 3145728 /dev/urandom > /tmp/after
cp /tmp/after /mnt/after && sync || fail "writing /mnt/after failed"
echo 3 > /proc/sys/vm/drop_caches
[ "$(sha256 /mnt/after)" = "$(sha256 /tmp/after)" ] && value guest.after.readback ok
value guest.rng.bytes "$(head -c 512 /dev/hwrng | wc -c)"
echo net-afterwards | timeout 30 socat -u - TCP:10.0.4.1:5005 || fail "net afterwards failed"
: > /tmp/stop
wait "$worker"
wait "$writer"
umount /mnt && value guest.umount ok
dmesg | grep -iE 'lockup|stall|clocksource|EXT4-fs error|vsock' | sed 's/^/guest-dmesg: /'
