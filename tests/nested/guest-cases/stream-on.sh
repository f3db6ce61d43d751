#!/bin/sh
# Guest half of migrate-net: eth0 on the tap L1 keeps (10.0.7.2/24), ext4 on /dev/vda. Two
# writers run across a failed and a successful live migration:
#  - a TCP stream to L1 (10.0.7.1:5007): 2 KiB random blocks, every byte sent also kept in
#    /tmp/sent (RAM, so it moves with the guest), closed normally at the end;
#  - a record log: "n uptime hash" appended to /mnt/records (synced every 10 records), the
#    same lines kept in /tmp/expected; hash = the first 16 hex digits of sha256("rec-n").
# L1 tells the guest over vsock port 1234 when the VM has moved; both writers go on 3 s more
# and stop. The guest then reports the stream's digest and socat's exit status (a reset
# connection fails it) and checks every record on disk (after drop_caches): numbered 1..n in
# order, each hash right, uptime never backwards, the file identical to what it wrote.
. /etc/kestrel/guest-lib.sh
GUEST_DMESG='virtio|vd[a-z]|eth0|vsock|EXT4|lockup|rcu|clock'
wait_for /dev/vda || fail "no /dev/vda"
wait_for /sys/class/net/eth0 || fail "no eth0"
wait_for /dev/vsock || fail "no /dev/vsock"
ip link set lo up
ip addr add 10.0.7.2/24 dev eth0 && ip link set eth0 up || fail "eth0 set-up failed"
/usr/sbin/mkfs.ext4 -q -F /dev/vda || fail "mkfs.ext4 failed"
mkdir -p /mnt && mount -t ext4 /dev/vda /mnt || fail "mount failed"

( ( while [ ! -e /tmp/stop ]; do head -c 2048 /dev/urandom; sleep 0.02; done ) | tee /tmp/sent |
    timeout 900 socat -u - TCP:10.0.7.1:5007,retry=20,interval=0.5
  echo $? > /tmp/stream.rc ) &
streamer=$!
( n=0
  while [ ! -e /tmp/stop ]; do
    n=$((n + 1))
    read -r up _ < /proc/uptime
    line="$n $up $(echo "rec-$n" | sha256sum | cut -c1-16)"
    echo "$line" >> /mnt/records && echo "$line" >> /tmp/expected || { echo "KESTREL-GUEST-FAIL record $n"; exit 1; }
    [ $((n % 10)) -eq 0 ] && sync
    sleep 0.2
  done ) &
recorder=$!
timeout 800 socat -u VSOCK-LISTEN:1234 CREATE:/tmp/msg &
listener=$!
sleep 3
[ -s /tmp/sent ] && [ -s /mnt/records ] || fail "the writers did not start"
echo "KESTREL-STREAM-READY"
wait "$listener" || fail "no vsock message from L1 afterwards"
value guest.moved.msg "$(head -n 1 /tmp/msg)"
value guest.stream.bytes_at_msg "$(wc -c < /tmp/sent)"
value guest.records.at_msg "$(wc -l < /tmp/expected)"
sleep 3
: > /tmp/stop
wait "$recorder" || fail "the record writer failed"
wait "$streamer"
value guest.stream.rc "$(cat /tmp/stream.rc)"
value guest.stream.bytes "$(wc -c < /tmp/sent)"
value guest.stream.sha256 "$(sha256 /tmp/sent)"
sync && echo 3 > /proc/sys/vm/drop_caches
value guest.records.count "$(wc -l < /mnt/records)"
[ "$(sha256 /mnt/records)" = "$(sha256 /tmp/expected)" ] && value guest.records.same ok
bad=0
while read -r n up h; do
  [ "$(echo "rec-$n" | sha256sum | cut -c1-16)" = "$h" ] || bad=$((bad + 1))
done < /mnt/records
value guest.records.bad_hash "$bad"
value guest.records.out_of_order "$(awk '$1 != NR { o++ } END { print o + 0 }' /mnt/records)"
value guest.clock.backwards "$(awk 'NR > 1 && $2 + 0 < prev { b++ } { prev = $2 + 0 } END { print b + 0 }' /mnt/records)"
umount /mnt && value guest.umount ok
dmesg | grep -iE 'lockup|stall|clocksource|EXT4-fs error|eth0|link' | sed 's/^/guest-dmesg: /'
