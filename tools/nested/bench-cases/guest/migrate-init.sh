#!/bin/sh
# /init of tools/bench-migrate.sh's guest (busybox): says it is up, then keeps rewriting
# BENCH_DIRTY_MIB MiB of its RAM (a tmpfs file, over and over; bench.dirty=N on the command
# line, 0 = idle) and prints a heartbeat with its uptime every second, so a migrated guest
# that runs on shows it in the destination's console. Never ends: the benchmark stops it.
mount -t devtmpfs devtmpfs /dev 2>/dev/null
exec </dev/console >/dev/console 2>&1
mount -t proc proc /proc
mount -t tmpfs -o size=90% tmpfs /tmp
dirty=$(sed -n 's/.*bench\.dirty=\([0-9]*\).*/\1/p' /proc/cmdline)
echo "BENCH-MIG-READY dirty_mib=${dirty:-0}"
if [ "${dirty:-0}" -gt 0 ]; then
  ( while :; do dd if=/dev/zero of=/tmp/dirty bs=1M count="$dirty" conv=notrunc 2>/dev/null; done ) &
fi
while :; do
  read -r up _ < /proc/uptime
  echo "BENCH-MIG-BEAT uptime=$up"
  sleep 1
done
