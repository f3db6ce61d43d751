#!/bin/sh
# Live-migration benchmark, kestrel and QEMU side by side in this one L1 (tools/bench-migrate.sh
# builds the run; settings in /nested/bench/params). Each VMM runs the same Debian vmlinux with
# /l2/migrate.cpio.gz (guest/migrate-init.sh: a heartbeat every second, BENCH_DIRTY MiB of RAM
# rewritten over and over), 2 vCPUs, BENCH_MEMORY MiB, no devices, and migrates it to a second
# instance of itself in L1 over a unix socket, downtime target 50 ms on both:
#   kestrel: destination `kestrel run --incoming unix:...`, PUT /migrate, GET /migrate until
#            completed: its total_ms and downtime_ms (source's pause -> destination's OK);
#   qemu:    -M microvm, destination `-incoming unix:...`, QMP migrate-set-parameters
#            downtime-limit 50 and migrate, query-migrate until completed: total-time and
#            downtime (QEMU's own figures, measured the same way on the source).
# Both give the guest a virtio-net NIC (kestrel: PCI, tap bk0 -> bk1 through --remap; QEMU:
# virtio-net-device on microvm's MMIO, tap bq0 -> bq1; vhost off, as kestrel has none), the
# four taps in bridge br9 (10.0.9.1/24). The guest sends a UDP heartbeat every 5 ms to
# 10.0.9.1:6000, and `guest_load udp-gap` in L1 reports the largest gap between arrivals
# across the migration: the downtime as the network sees it.
# Each run then checks the destination's guest goes on (a new heartbeat line) and prints
# `BENCH-RESULT vmm=V round=R total_ms=T downtime_ms=D gap_ms=G ok=0|1`. Rounds rotate the order.
#@ timeout 7200
#@ l1-binaries /usr/bin/qemu-system-x86_64 /usr/bin/curl /usr/bin/socat
#@ allow-line .
. /nested/bench/lib.sh
initrd=/l2/migrate.cpio.gz
cmdline="console=ttyS0 reboot=k panic=-1 quiet bench.dirty=$BENCH_DIRTY bench.beat=10.0.9.1:6000"
api=/tmp/bm-src.sock
mac=52:54:00:00:09:02
brctl addbr br9 && ip addr add 10.0.9.1/24 dev br9 && ip link set br9 up || echo "bench-migrate: no bridge br9"
for t in bk0 bk1 bq0 bq1; do
  tunctl -t "$t" > /dev/null && brctl addif br9 "$t" && ip link set "$t" up || echo "bench-migrate: tap $t failed"
done

# gap_start / gap_stop: guest_load udp-gap on 10.0.9.1:6000 around a migration; gap_stop
# sets `gap` to the largest gap in ms (0 when no heartbeat arrived).
gap_start() { "$LOAD" udp-gap --listen 6000 > /tmp/bm-gap.out 2>&1 & gap_pid=$!; }
gap_stop() {
  kill -TERM "$gap_pid" 2>/dev/null; wait "$gap_pid" 2>/dev/null
  sed 's/^/bench-migrate: /' /tmp/bm-gap.out
  gap=$(sed -n 's/.*max_gap_ms=\([0-9.]*\).*/\1/p' /tmp/bm-gap.out)
  gap=${gap:-0}
}

beats() { local n; n=$(grep -c BENCH-MIG-BEAT "$1" 2>/dev/null); echo "${n:-0}"; }
wait_line() { # FILE PATTERN SECONDS
  local i=0
  while [ "$i" -lt $(( $3 * 10 )) ]; do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.1; i=$((i + 1)); done
  return 1
}
qmp() { # SOCKET COMMAND-JSON...: the answers, one per line
  local s=$1
  shift
  { echo '{"execute": "qmp_capabilities"}'; for c in "$@"; do echo "$c"; done; sleep 0.3; } |
    socat -t 2 - UNIX-CONNECT:"$s" 2>/dev/null | grep -v '"QMP"'
}
num() { sed -n "s/.*\"$1\": *\([0-9]*\).*/\1/p" | head -n 1; }

run_kestrel() { # ROUND
  rm -f "$api" /tmp/bm.mig /tmp/bm-src.con /tmp/bm-dst.con
  "$KESTREL" run --incoming unix:/tmp/bm.mig --remap bk0=bk1 --serial file:/tmp/bm-dst.con --log-level info > /tmp/bm-dst.log 2>&1 &
  local dst=$! src total=0 down=0 gap=0 ok=0 j phase i=0
  "$KESTREL" run --api-sock "$api" --serial file:/tmp/bm-src.con --log-level info --kernel /l2/vmlinux --initrd "$initrd" \
    --cpus 2 --memory "${BENCH_MEMORY}M" --net "tap=bk0,mac=$mac" --cmdline "$cmdline" > /tmp/bm-src.log 2>&1 &
  src=$!
  if wait_line /tmp/bm-src.con BENCH-MIG-BEAT 120 && [ -S /tmp/bm.mig ]; then
    gap_start
    sleep 2
    curl -s -m 10 -o /dev/null --unix-socket "$api" -X PUT http://localhost/migrate \
      -d '{"destination": "unix:/tmp/bm.mig", "downtime_ms": 50}'
    while [ "$i" -lt 1200 ]; do
      j=$(curl -s -m 10 --unix-socket "$api" http://localhost/migrate)
      phase=$(echo "$j" | sed -n 's/.*"phase":"\([a-z-]*\)".*/\1/p')
      [ $((i % 50)) = 49 ] && echo "bench-migrate: kestrel round $1 at $((i / 10)) s: $j"
      case $phase in completed|failed|cancelled|"") break ;; esac
      sleep 0.1; i=$((i + 1))
    done
    echo "bench-migrate: kestrel round $1: $j"
    total=$(echo "$j" | sed -n 's/.*"total_ms":\([0-9]*\).*/\1/p')
    down=$(echo "$j" | sed -n 's/.*"downtime_ms":\([0-9]*\).*/\1/p')
    if [ -z "$phase" ] && wait_line /tmp/bm-src.log 'completed: .* ms, downtime' 5; then
      # The source ended (it exits once the VM has moved) before a poll saw "completed":
      # its log has the figures.
      phase=completed
      total=$(sed -n 's/.*completed: .* in \([0-9]*\) ms, downtime.*/\1/p' /tmp/bm-src.log)
      down=$(sed -n 's/.*completed: .*, downtime \([0-9]*\) ms.*/\1/p' /tmp/bm-src.log)
    fi
    local before
    before=$(beats /tmp/bm-dst.con)
    [ "$phase" = completed ] && sleep 2.5 && [ "$(beats /tmp/bm-dst.con)" -gt "$before" ] && ok=1
    gap_stop
  fi
  kill "$src" "$dst" 2>/dev/null; wait "$src" "$dst" 2>/dev/null
  grep -E 'migration: (round|downtime)' /tmp/bm-src.log | sed 's/^/bench-migrate: kestrel: /'
  grep -E 'migration: (state loaded|disks locked)|state applied' /tmp/bm-dst.log | sed 's/^/bench-migrate: kestrel destination: /'
  [ "$ok" = 1 ] || { echo "bench-migrate: kestrel round $1 failed"; tail -n 5 /tmp/bm-src.log /tmp/bm-dst.log /tmp/bm-src.con /tmp/bm-dst.con; }
  echo "BENCH-RESULT vmm=kestrel round=$1 total_ms=${total:-0} downtime_ms=${down:-0} gap_ms=$gap ok=$ok"
}

run_qemu() { # ROUND
  rm -f /tmp/bq.mig /tmp/bq-src.qmp /tmp/bq-dst.qmp /tmp/bq-src.con /tmp/bq-dst.con
  local common="-M microvm -enable-kvm -cpu host -smp 2 -m $BENCH_MEMORY -nodefaults -no-user-config -display none -no-reboot -kernel /l2/vmlinux -initrd $initrd"
  local nic="-device virtio-net-device,netdev=n0,mac=$mac -netdev tap,id=n0,script=no,downscript=no,vhost=off,ifname"
  # shellcheck disable=SC2086
  $QEMU $common -append "$cmdline" -serial file:/tmp/bq-dst.con -qmp unix:/tmp/bq-dst.qmp,server=on,wait=off \
    $nic=bq1 -incoming unix:/tmp/bq.mig > /tmp/bq-dst.log 2>&1 &
  local dst=$! src total=0 down=0 gap=0 ok=0 j status i=0
  # shellcheck disable=SC2086
  $QEMU $common -append "$cmdline" -serial file:/tmp/bq-src.con -qmp unix:/tmp/bq-src.qmp,server=on,wait=off \
    $nic=bq0 > /tmp/bq-src.log 2>&1 &
  src=$!
  if wait_line /tmp/bq-src.con BENCH-MIG-BEAT 120 && [ -S /tmp/bq-dst.qmp ]; then
    gap_start
    sleep 2
    qmp /tmp/bq-src.qmp '{"execute": "migrate-set-parameters", "arguments": {"downtime-limit": 50}}' \
      '{"execute": "migrate", "arguments": {"uri": "unix:/tmp/bq.mig"}}' > /dev/null
    while [ "$i" -lt 1200 ]; do
      # The answer's line, not an event (STOP, MIGRATION...) that came with it.
      j=$(qmp /tmp/bq-src.qmp '{"execute": "query-migrate"}' | grep '"return"' | tail -n 1)
      status=$(echo "$j" | sed -n 's/.*"status": *"\([a-z-]*\)".*/\1/p' | head -n 1)
      case $status in completed|failed|cancelled|"") break ;; esac
      sleep 0.1; i=$((i + 1))
    done
    echo "bench-migrate: qemu round $1: $j"
    total=$(echo "$j" | num total-time)
    down=$(echo "$j" | num downtime)
    local before
    before=$(beats /tmp/bq-dst.con)
    [ "$status" = completed ] && sleep 2.5 && [ "$(beats /tmp/bq-dst.con)" -gt "$before" ] && ok=1
    gap_stop
  fi
  kill "$src" "$dst" 2>/dev/null; wait "$src" "$dst" 2>/dev/null
  [ "$ok" = 1 ] || { echo "bench-migrate: qemu round $1 failed"; tail -n 5 /tmp/bq-src.log /tmp/bq-dst.log /tmp/bq-src.con /tmp/bq-dst.con; }
  echo "BENCH-RESULT vmm=qemu round=$1 total_ms=${total:-0} downtime_ms=${down:-0} gap_ms=$gap ok=$ok"
}

r=1
while [ "$r" -le "$BENCH_ROUNDS" ]; do
  for v in $(bench_order "$r" "$BENCH_VMMS"); do
    case $v in
      kestrel) run_kestrel "$r" ;;
      qemu) run_qemu "$r" ;;
    esac
  done
  r=$((r + 1))
done
echo "BENCH-DONE"
