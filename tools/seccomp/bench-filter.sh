#!/usr/bin/env bash
# bench-filter.sh: what kestrel's seccomp filter costs the device data paths, with and without
# it in one run. tools/bench-blk.sh and tools/bench-net.sh drive the real devices from a
# harness (blk-bench, net-bench) that has none of kestrel's threads, so no filter is on there;
# here the same harness runs plain and under the event loop's filter (seccomp-exec event-loop:
# the allow-list in log mode, so each allowed call pays the filter as it does in kestrel),
# rounds alternating which goes first, both pinned to one CPU. Prints the median of each, the
# ratio filtered/plain and the spread; first, what one hot-path syscall pays for its filter
# (seccomp-syscall-cost). Informational only: never a pass/fail on speed.
#
# usage: tools/seccomp/bench-filter.sh [BUILD_DIR (default build)]
# env:   ROUNDS (5), SECONDS_PER_RUN (2), BENCH_CPU (nproc - 1),
#        IMAGE (/var/tmp/kestrel-bench-filter.img, 256 MiB), NET (1: also net-bench; root)
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
build=${1:-build}
[[ $build = /* ]] || build=$root/$build
rounds=${ROUNDS:-5}
secs=${SECONDS_PER_RUN:-2}
cpu=${BENCH_CPU:-$(( $(nproc) - 1 ))}
image=${IMAGE:-/var/tmp/kestrel-bench-filter.img}
pin=(taskset -c "$cpu")
wrap=$build/tools/seccomp/seccomp-exec
blk=$build/devices/blk-bench
net=$build/devices/net-bench
ninja -C "$build" tools/seccomp/seccomp-exec tools/seccomp/seccomp-syscall-cost devices/blk-bench \
  devices/net-bench >&2

echo "per call (seccomp-syscall-cost, CPU $cpu; 3 rounds)"
"${pin[@]}" "$build/tools/seccomp/seccomp-syscall-cost"
echo

if [[ ! -f $image || $(stat -c %s "$image") -ne $((256 << 20)) ]]; then
  dd if=/dev/urandom of="$image" bs=1M count=256 status=none conv=fsync
fi
cat "$image" > /dev/null  # page cache: the device model's cost, not the disk's

median() { python3 -c 'import statistics,sys; print(statistics.median(float(x) for x in sys.argv[1:]))' "$@"; }
spread() { python3 -c 'import sys; v=[float(x) for x in sys.argv[1:]]; print(f"{min(v):.0f}..{max(v):.0f}")' "$@"; }
field() { sed -n "s/.* $1=\([0-9.]*\).*/\1/p"; }

echo "blk-bench (page cache, $secs s per run, median of $rounds rounds, CPU $cpu)"
printf '%-18s %12s %12s %8s   %s\n' pattern plain filtered ratio "spread plain / filtered"
for p in "4k-randread-qd1 randread 4096 1" "4k-randread-qd32 randread 4096 32" "128k-read-qd4 read 131072 4"; do
  read -r name rw bs qd <<< "$p"
  plain=() filt=()
  for ((r = 0; r < rounds; r++)); do
    args=(--image "$image" --rw "$rw" --bs "$bs" --qd "$qd" --seconds "$secs")
    if (( r % 2 == 0 )); then
      plain+=("$("${pin[@]}" "$blk" "${args[@]}" | field iops)")
      filt+=("$("${pin[@]}" "$wrap" event-loop "$blk" "${args[@]}" | field iops)")
    else
      filt+=("$("${pin[@]}" "$wrap" event-loop "$blk" "${args[@]}" | field iops)")
      plain+=("$("${pin[@]}" "$blk" "${args[@]}" | field iops)")
    fi
  done
  mp=$(median "${plain[@]}") mf=$(median "${filt[@]}")
  printf '%-18s %12.0f %12.0f %8.3f   %s / %s (IOPS)\n' "$name" "$mp" "$mf" "$(python3 -c "print($mf / $mp)")" \
    "$(spread "${plain[@]}")" "$(spread "${filt[@]}")"
done

[[ ${NET:-1} = 1 ]] || exit 0
echo
echo "net-bench kestrel row (frames/s, 1514-byte frames; each run is net-bench's median of 3 rounds of 1 s)"
printf '%-18s %12s %12s %8s   %s\n' direction plain filtered ratio "spread plain / filtered"
for dir in tx rx; do
  plain=() filt=()
  for ((r = 0; r < rounds; r++)); do
    run_plain() { "$net" --dir "$dir" --seconds 1 --rounds 3 | awk '$1 == "kestrel" { print $3 }'; }
    run_filt() { "$wrap" event-loop "$net" --dir "$dir" --seconds 1 --rounds 3 | awk '$1 == "kestrel" { print $3 }'; }
    if (( r % 2 == 0 )); then plain+=("$(run_plain)"); filt+=("$(run_filt)")
    else filt+=("$(run_filt)"); plain+=("$(run_plain)"); fi
  done
  mp=$(median "${plain[@]}") mf=$(median "${filt[@]}")
  printf '%-18s %12.0f %12.0f %8.3f   %s / %s\n' "$dir" "$mp" "$mf" "$(python3 -c "print($mf / $mp)")" \
    "$(spread "${plain[@]}")" "$(spread "${filt[@]}")"
done
