#!/bin/sh
# Guest half of pod-net: the virtio-net interface with the pod veth's MAC takes the pod's
# address and default route (podnet.* on the command line, from kestrel-podnet's
# KESTREL_GUEST_NET), pings the gateway, then waits until L1 has pinged it three times.
. /etc/kestrel/guest-lib.sh
GUEST_DMESG='virtio|pci|eth|net'
for p in $(cat /proc/cmdline); do
  case $p in podnet.mac=*) mac=${p#*=} ;; podnet.addr=*) addr=${p#*=} ;; podnet.gw=*) gw=${p#*=} ;; esac
done
wait_for /sys/class/net/eth0 || fail "no eth0 (interfaces: $(ls /sys/class/net | tr '\n' ' '))"
dev=""
for d in /sys/class/net/*; do [ "$(cat "$d/address")" = "$mac" ] && dev=${d##*/}; done
[ -n "$dev" ] || fail "no interface with MAC $mac"
value guest.mac "$(cat /sys/class/net/$dev/address)"
ip link set lo up
ip link set "$dev" up && ip addr add "$addr" dev "$dev" && ip route add default via "$gw" || fail "ip config failed"
out=$(ping -c 3 -W 5 "$gw" 2>&1)
echo "$out" | sed 's/^/ping: /'
value guest.ping.received "$(echo "$out" | sed -n 's/.* \([0-9][0-9]*\) packets received.*/\1/p')"
in_echos() { awk '/^Icmp:/ { if (h) { print $10; exit } h = 1 }' /proc/net/snmp; }
i=0
while [ "$(in_echos)" -lt 3 ] && [ $i -lt 120 ]; do sleep 1; i=$((i + 1)); done
value guest.in_echos "$(in_echos)"
