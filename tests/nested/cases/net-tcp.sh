#!/bin/sh
# virtio-net on an L1 tap: the guest pings L1 and moves random data over TCP both ways (socat
# -u on each end: busybox nc quits at EOF on its stdin and would cut streams short). L1's and
# the guest's digests and sizes of each stream must agree.
#@ timeout 300
#@ expect-rc 0
#@ guest-modules virtio_pci virtio_net
#@ guest-binaries /usr/bin/socat
#@ l1-binaries /usr/bin/socat
#@ expect-line ^KESTREL-GUEST-CASE-END net-tcp rc=0$
#@ reject-line KESTREL-GUEST-MODULE-FAILED
#@ expect-value guest.mac == 52:54:00:12:34:56
#@ expect-value guest.ping.received == 3
#@ expect-value guest.up.rc == 0
#@ expect-value guest.down.rc == 0
#@ expect-value guest.up.sha256 == $l1.up.sha256
#@ expect-value guest.up.size == $l1.up.size
#@ expect-value guest.down.sha256 == $l1.down.sha256
#@ expect-value guest.down.size == $l1.down.size
# Offloads the guest's driver negotiated (virtio 1.2 §5.1.3; /sys/.../features is the bit
# string, bit 0 first): CSUM(0), GUEST_CSUM(1), GUEST_TSO4(7), HOST_TSO4(11), MRG_RXBUF(15),
# and that they were used: TSO frames both ways, checksums left to the host, frames spread
# over several merged buffers; 1500-byte MTU; nothing dropped or refused.
#@ expect-value guest.net.features =~ 11.{5}1.{3}1.{3}1.*
#@ expect-value guest.mtu == 1500
#@ expect-value kestrel.net0.tx_gso_packets >= 1
#@ expect-value kestrel.net0.tx_csum_offloaded >= 1
#@ expect-value kestrel.net0.rx_gso_packets >= 1
#@ expect-value kestrel.net0.rx_buffers_used > $kestrel.net0.rx_packets
#@ expect-value kestrel.net0.tx_tap_errors == 0
#@ expect-value kestrel.net0.rx_drops_too_big == 0
#@ expect-value kestrel.net0.rx_drops_bad_offload == 0
#@ expect-value kestrel.net0.tx_bad_header == 0
. /nested/case-lib.sh
tap=kt0
tunctl -t "$tap" > /dev/null || exit 1
ip addr add 10.0.2.1/24 dev "$tap" && ip link set "$tap" up || exit 1
head -c "$(( 4194304 + $(head -c 2 /dev/urandom | od -An -tu2 | tr -d ' ') * 64 ))" /dev/urandom > /tmp/net-down
nested_value l1.down.size "$(stat -c %s /tmp/net-down)"
nested_value l1.down.sha256 "$(nested_sha256 /tmp/net-down)"
rm -f /tmp/net-up
timeout 250 socat -u TCP-LISTEN:5001,reuseaddr CREATE:/tmp/net-up &
up_pid=$!
timeout 250 socat -u FILE:/tmp/net-down TCP-LISTEN:5002,reuseaddr &
down_pid=$!
boot_guest --timeout 240 --append "quiet kestrel.case=net-tcp" \
  --kernel "$L2/vmlinuz" --initrd "$L2/initrd.cpio.gz" --cpus 1 --memory 256M \
  --net "tap=$tap,mac=52:54:00:12:34:56"
rc=$?
kill "$up_pid" "$down_pid" 2>/dev/null
wait "$up_pid" "$down_pid" 2>/dev/null
nested_value l1.up.size "$(stat -c %s /tmp/net-up)"
nested_value l1.up.sha256 "$(nested_sha256 /tmp/net-up)"
echo "l1 $tap: rx_packets=$(cat /sys/class/net/$tap/statistics/rx_packets) tx_packets=$(cat /sys/class/net/$tap/statistics/tx_packets)"
ip link del "$tap" 2>/dev/null || tunctl -d "$tap" > /dev/null
rm -f /tmp/net-up /tmp/net-down
exit "$rc"
