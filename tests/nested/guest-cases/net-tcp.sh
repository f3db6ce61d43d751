#!/bin/sh
# Guest half of net-tcp: eth0 (virtio-net) at 10.0.2.2/24 next to L1's tap at 10.0.2.1; three
# pings, then a random upload to L1 (port 5001) and a download from it (port 5002), each
# several MiB over TCP, with their digests and sizes.
. /etc/kestrel/guest-lib.sh
GUEST_DMESG='virtio|pci|eth0|net'
wait_for /sys/class/net/eth0 || fail "no eth0 (interfaces: $(ls /sys/class/net | tr '\n' ' '))"
value guest.mac "$(cat /sys/class/net/eth0/address)"
value guest.net.features "$(cat /sys/class/net/eth0/device/features)"
ip link set lo up
ip addr add 10.0.2.2/24 dev eth0 || fail "ip addr failed"
ip link set eth0 up || fail "ip link up failed"
value guest.mtu "$(cat /sys/class/net/eth0/mtu)"
out=$(ping -c 3 -W 5 10.0.2.1 2>&1)
echo "$out" | sed 's/^/ping: /'
value guest.ping.received "$(echo "$out" | sed -n 's/.* \([0-9][0-9]*\) packets received.*/\1/p')"
head -c "$(random_size 4194304 8388608)" /dev/urandom > /tmp/up
value guest.up.size "$(stat -c %s /tmp/up)"
value guest.up.sha256 "$(sha256 /tmp/up)"
timeout 120 socat -u FILE:/tmp/up TCP:10.0.2.1:5001
value guest.up.rc $?
timeout 120 socat -u TCP:10.0.2.1:5002 CREATE:/tmp/down
value guest.down.rc $?
value guest.down.size "$(stat -c %s /tmp/down)"
value guest.down.sha256 "$(sha256 /tmp/down)"
rx=$(cat /sys/class/net/eth0/statistics/rx_packets) tx=$(cat /sys/class/net/eth0/statistics/tx_packets)
echo "eth0: rx_packets=$rx tx_packets=$tx rx_errors=$(cat /sys/class/net/eth0/statistics/rx_errors)"
