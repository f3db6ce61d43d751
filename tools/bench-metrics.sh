#!/usr/bin/env bash
# bench-metrics.sh: what kestrel's metrics cost, with and without them in one run. The same
# sources are built twice: BUILD_DIR as usual and build-nometrics with `-Dmetrics=false`, where
# every counter update and every clock read taken for a metric compiles to nothing
# (devices/metrics.hpp). Then, rounds alternating which build goes first, all pinned to one CPU:
#   start-up   kestrel exec -> exit of tests/guests/exit_now (needs a KVM character device)
#   vCPU exits kestrel exec -> exit of tests/guests/pio_loop (100000 port reads, each a
#              KVM_EXIT_IO): (wall - start-up) / 100000 is one exit's cost
#   blk-bench  the virtio-blk device model on the page cache (tools/bench-blk.sh's harness)
#   net-bench  the virtio-net device model's kestrel row, tx and rx (root: taps and a bridge)
# Prints the median of each, the ratio with/without and the spread. Informational only: never
# a pass/fail on speed.
#
# usage: tools/bench-metrics.sh [BUILD_DIR (default build)]
# env:   ROUNDS (5), SECONDS_PER_RUN (2), BENCH_CPU (nproc - 1), STARTS (20: exec runs per
#        round for start-up and exits), IMAGE (/var/tmp/kestrel-bench-metrics.img, 256 MiB),
#        NET (1: also net-bench), PARTS ("startup blk net": which rows to measure)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-build}
[[ $build = /* ]] || build=$root/$build
plain_build=$root/build-nometrics
rounds=${ROUNDS:-5}
secs=${SECONDS_PER_RUN:-2}
starts=${STARTS:-20}
cpu=${BENCH_CPU:-$(( $(nproc) - 1 ))}
image=${IMAGE:-/var/tmp/kestrel-bench-metrics.img}
pin=(taskset -c "$cpu")
targets=(vmm/kestrel devices/blk-bench devices/net-bench tests/guests/exit_now.elf
         tests/guests/pio_loop.elf)

[[ -f $plain_build/build.ninja ]] || meson setup "$plain_build" -Dmetrics=false >/dev/null
echo "building ${targets[*]} with metrics ($build) and without ($plain_build)" >&2
ninja -C "$build" "${targets[@]}" >&2
ninja -C "$plain_build" "${targets[@]}" >&2

median() { python3 -c 'import statistics,sys; print(statistics.median(float(x) for x in sys.argv[1:]))' "$@"; }
spread() { python3 -c 'import sys; v=[float(x) for x in sys.argv[1:]]; print(f"{min(v):.4g}..{max(v):.4g}")' "$@"; }
field() { sed -n "s/.* $1=\([0-9.]*\).*/\1/p"; }
row() {  # name unit with... -- without...
  local name=$1 unit=$2; shift 2
  local with=() without=()
  while [[ $1 != -- ]]; do with+=("$1"); shift; done
  shift
  without=("$@")
  local mw mo
  mw=$(median "${with[@]}") mo=$(median "${without[@]}")
  printf '%-22s %14.4g %14.4g %8.3f   %s / %s %s\n' "$name" "$mw" "$mo" "$(python3 -c "print($mw / $mo)")" \
    "$(spread "${with[@]}")" "$(spread "${without[@]}")" "$unit"
}
printf '%-22s %14s %14s %8s   %s\n' what with-metrics without ratio "spread with / without"

# exec -> exit of one guest, median of $starts runs, in ms.
exec_ms() {  # build guest
  python3 - "$1/vmm/kestrel" "$1/tests/guests/$2.elf" "$starts" "${pin[@]}" <<'EOF'
import statistics, subprocess, sys, time
kestrel, guest, n, pin = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4:]
cmd = [*pin, kestrel, "run", "--kernel", guest, "--memory", "128M", "--serial", "none", "--debug-exit"]
walls = []
for _ in range(n):
    t = time.monotonic()
    p = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    walls.append((time.monotonic() - t) * 1e3)
    if p.returncode != 0:
        sys.exit(f"bench-metrics: {' '.join(cmd)}: exit {p.returncode}\n{p.stderr.decode(errors='replace')}")
print(f"{statistics.median(walls):.3f}")
EOF
}

parts=" ${PARTS:-startup blk net} "
if [[ $parts != *" startup "* ]]; then
  :
elif [[ -c /dev/kvm ]]; then
  s_with=() s_without=() e_with=() e_without=() x_with=() x_without=()
  for ((r = 0; r < rounds; r++)); do
    order=("$build" "$plain_build")
    (( r % 2 )) && order=("$plain_build" "$build")
    for b in "${order[@]}"; do
      s=$(exec_ms "$b" exit_now) e=$(exec_ms "$b" pio_loop)
      x=$(python3 -c "print(($e - $s) * 1e6 / 100000)")  # ns per exit
      if [[ $b == "$build" ]]; then s_with+=("$s") e_with+=("$e") x_with+=("$x")
      else s_without+=("$s") e_without+=("$e") x_without+=("$x"); fi
    done
  done
  row "start-up exit_now" "ms" "${s_with[@]}" -- "${s_without[@]}"
  row "pio_loop exec->exit" "ms" "${e_with[@]}" -- "${e_without[@]}"
  row "one vCPU exit" "ns" "${x_with[@]}" -- "${x_without[@]}"
else
  echo "(no KVM character device at /dev/kvm: start-up and vCPU-exit rows left out)"
fi

if [[ $parts == *" blk "* ]]; then
if [[ ! -f $image || $(stat -c %s "$image") -ne $((256 << 20)) ]]; then
  dd if=/dev/urandom of="$image" bs=1M count=256 status=none conv=fsync
fi
cat "$image" > /dev/null  # page cache: the device model's cost, not the disk's
for p in "4k-randread-qd1 randread 4096 1" "4k-randread-qd32 randread 4096 32" "128k-read-qd4 read 131072 4"; do
  read -r name rw bs qd <<< "$p"
  with=() without=()
  args=(--image "$image" --rw "$rw" --bs "$bs" --qd "$qd" --seconds "$secs")
  for ((r = 0; r < rounds; r++)); do
    order=("$build" "$plain_build")
    (( r % 2 )) && order=("$plain_build" "$build")
    for b in "${order[@]}"; do
      v=$("${pin[@]}" "$b/devices/blk-bench" "${args[@]}" | field iops)
      if [[ $b == "$build" ]]; then with+=("$v"); else without+=("$v"); fi
    done
  done
  row "blk $name" "IOPS" "${with[@]}" -- "${without[@]}"
done
fi

[[ ${NET:-1} = 1 && $parts == *" net "* ]] || exit 0
for dir in tx rx; do
  with=() without=()
  for ((r = 0; r < rounds; r++)); do
    order=("$build" "$plain_build")
    (( r % 2 )) && order=("$plain_build" "$build")
    for b in "${order[@]}"; do
      # net-bench prints one kestrel row per round: every round counts.
      mapfile -t v < <("${pin[@]}" "$b/devices/net-bench" --dir "$dir" --seconds 1 --rounds 3 \
                         --only-kestrel | awk '$1 == "kestrel" { print $3 }')
      (( ${#v[@]} > 0 )) || { echo "bench-metrics: net-bench --dir $dir printed no kestrel row" >&2; exit 1; }
      if [[ $b == "$build" ]]; then with+=("${v[@]}"); else without+=("${v[@]}"); fi
    done
  done
  row "net $dir 1514 B" "frames/s" "${with[@]}" -- "${without[@]}"
done
