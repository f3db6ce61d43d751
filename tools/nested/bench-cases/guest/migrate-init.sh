#!/bin/sh
# /init of tools/bench-migrate.sh's guest (busybox): says it is up, then keeps rewriting
# BENCH_DIRTY_MIB MiB of its RAM (a tmpfs file, over and over; bench.dirty=N on the command
# line, 0 = idle) and prints a heartbeat with its uptime every second, so a migrated guest
# that runs on shows it in the destination's console. Never ends: the benchmark stops it.
# With bench.beat=IP:PORT it also brings eth0 up as 10.0.9.2/24 (the initramfs's virtio
# modules) and sends a UDP heartbeat there every 5 ms (guest_load udp-beat), from which L1
# measures the downtime the network sees.
mount -t devtmpfs devtmpfs /dev 2>/dev/null
exec </dev/console >/dev/console 2>&1
mount -t proc proc /proc
mount -t tmpfs -o size=90% tmpfs /tmp
dirty=$(sed -n 's/.*bench\.dirty=\([0-9]*\).*/\1/p' /proc/cmdline)
beat=$(sed -n 's/.*bench\.beat=\([0-9.:]*\).*/\1/p' /proc/cmdline)
if [ -n "$beat" ]; then
  while read -r m; do insmod "/lib/modules/$m" || echo "BENCH-MIG-MODULE-FAILED $m"; done < /etc/kestrel/modules
  i=0
  while [ ! -e /sys/class/net/eth0 ] && [ "$i" -lt 50 ]; do sleep 0.2; i=$((i + 1)); done
  ip link set lo up
  ip addr add 10.0.9.2/24 dev eth0 && ip link set eth0 up || echo "BENCH-MIG-NET-FAILED"
  guest_load udp-beat "$beat" --interval-ms 5 &
fi
echo "BENCH-MIG-READY dirty_mib=${dirty:-0} beat=${beat:-none}"
if [ "${dirty:-0}" -gt 0 ]; then
  ( while :; do dd if=/dev/zero of=/tmp/dirty bs=1M count="$dirty" conv=notrunc 2>/dev/null; done ) &
fi
while :; do
  read -r up _ < /proc/uptime
  echo "BENCH-MIG-BEAT uptime=$up"
  sleep 1
done
