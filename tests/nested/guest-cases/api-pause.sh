#!/bin/sh
# Guest half of api-pause: a 32 MiB download from L1 and 16 MiB of O_DIRECT writes to the
# root drive run while L1 pauses the VM for ~21 s; both must finish intact afterwards, and a
# sampler of /proc/uptime must never see the clock go backwards (and does see the pause).
. /etc/kestrel/guest-lib.sh
GUEST_DMESG='virtio|pci|vd[a-z]|eth0|net|lockup|rcu|clock'
value guest.cmdline.root "$(tr ' ' '\n' < /proc/cmdline | grep '^root=')"
wait_for /dev/vda || fail "no /dev/vda"
wait_for /sys/class/net/eth0 || fail "no eth0"
ip link set lo up
ip addr add 10.0.3.2/24 dev eth0 && ip link set eth0 up || fail "eth0 set-up failed"
( prev=0; gap=0; back=0
  while [ ! -e /tmp/stop-clock ]; do
    read -r now _ < /proc/uptime
    back=$(awk -v a="$prev" -v b="$now" -v c="$back" 'BEGIN { print (b < a) ? c + 1 : c }')
    gap=$(awk -v a="$prev" -v b="$now" -v g="$gap" 'BEGIN { d = b - a; print (a > 0 && d > g) ? d : g }')
    prev=$now
    echo "$back $gap" > /tmp/clock
    sleep 0.2
  done ) &
head -c 16777216 /dev/urandom > /tmp/w
timeout 300 socat -u TCP:10.0.3.1:5003 CREATE:/tmp/down &
dl=$!
dd if=/tmp/w of=/dev/vda bs=64k oflag=direct 2>/dev/null &
wr=$!
sleep 1
echo "KESTREL-PAUSE-NOW"
wait "$wr" || fail "disk writes failed"
wait "$dl" || fail "download failed"
value guest.down.sha256 "$(sha256 /tmp/down)"
echo 3 > /proc/sys/vm/drop_caches
if [ "$(dd if=/dev/vda bs=64k count=256 iflag=direct 2>/dev/null | sha256sum | cut -d' ' -f1)" = "$(sha256 /tmp/w)" ]; then
  value guest.disk.readback ok
else
  value guest.disk.readback mismatch
fi
: > /tmp/stop-clock
sleep 0.5
read -r back gap < /tmp/clock
value guest.clock.backwards "$back"
value guest.clock.max_gap_s "$(awk -v g="$gap" 'BEGIN { printf "%d", g }')"
dmesg | grep -iE 'lockup|stall|clocksource' | sed 's/^/guest-dmesg: /'
