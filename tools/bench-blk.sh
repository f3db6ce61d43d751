#!/usr/bin/env bash
# bench-blk.sh: virtio-blk device model throughput, no VM. For each pattern runs
#   blk-bench (real VirtioBlk + SplitQueue + io_uring back-end, MockDriver as the guest)
#   fio --ioengine=io_uring (the same host I/O with no device model)
# on the same file, with the page cache and with O_DIRECT, and prints both side by side with
# the ratio blk-bench/fio. Each pattern runs ROUNDS times per tool, alternating which tool goes
# first (this host's disk and CPU drift from run to run), and each tool is reported by its
# median round. Both tools run pinned to the same CPU (BENCH_CPU, default the last one):
# on the 2-vCPU bench host the same binary ran 30% slower on CPU 0 than on CPU 1, which
# made unpinned rounds bimodal. Informational only: never a pass/fail on speed.
#
# usage: tools/bench-blk.sh [IMAGE (default /var/tmp/kestrel-bench-blk.img)]
# env:   KESTREL_BUILD (default build) build dir holding devices/blk-bench
#        SIZE_MIB (1024), SECONDS_PER_RUN (3), ROUNDS (3), MODES ("cache direct"),
#        BENCH_CPU (nproc - 1)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${KESTREL_BUILD:-build}
bench="$root/$build/devices/blk-bench"
image=${1:-/var/tmp/kestrel-bench-blk.img}
size_mib=${SIZE_MIB:-1024}
secs=${SECONDS_PER_RUN:-3}
rounds=${ROUNDS:-3}
modes=${MODES:-cache direct}
cpu=${BENCH_CPU:-$(( $(nproc) - 1 ))}
pin=(taskset -c "$cpu")

[[ -x $bench ]] || { echo "bench-blk: $bench missing: ninja -C $build devices/blk-bench" >&2; exit 1; }
command -v fio >/dev/null || { echo "bench-blk: fio missing: apt-get install -y fio" >&2; exit 1; }
command -v python3 >/dev/null || { echo "bench-blk: python3 missing" >&2; exit 1; }

if [[ ! -f $image || $(stat -c %s "$image") -ne $((size_mib << 20)) ]]; then
    echo "bench-blk: writing a ${size_mib} MiB image at $image (fully allocated, random data)"
    dd if=/dev/urandom of="$image" bs=1M count="$size_mib" status=none conv=fsync
fi

# name rw bs qd
patterns=(
    "4k-randread-qd1   randread 4096   1"
    "4k-randread-qd32  randread 4096   32"
    "128k-seqread-qd4  read     131072 4"
    "128k-seqwrite-qd4 write    131072 4"
)

# --invalidate=0: fio otherwise drops the file's page cache before each job, which would
# compare a cold fio against a warm kestrel in cache mode.
fio_run() {  # rw bs qd direct -> "iops mibps"
    "${pin[@]}" fio --name=bench --filename="$image" --ioengine=io_uring --rw="$1" --bs="$2" --iodepth="$3" \
        --direct="$4" --invalidate=0 --runtime="$secs" --time_based --size="${size_mib}M" --randrepeat=0 \
        --norandommap --output-format=json 2>/dev/null |
        python3 -c 'import json,sys
j=json.load(sys.stdin)["jobs"][0]
d=j["write"] if j["write"]["io_bytes"] else j["read"]
print("%.0f %.1f" % (d["iops"], d["bw_bytes"] / 1048576))'
}

kv() { sed -n "s/.*\b$1=\([^ ]*\).*/\1/p"; }

echo "host: $(uname -r), $(nproc) CPUs; image $image (${size_mib} MiB) on $(df --output=source,fstype "$image" | tail -1)"
echo "median of ${rounds} interleaved rounds of ${secs}s per tool, both pinned to CPU $cpu; 'cache' = page cache (buffered), 'direct' = O_DIRECT"
printf '%-18s %-6s | %10s %9s | %10s %9s | %6s | %s\n' pattern mode kestrel-IOPS MiB/s fio-IOPS MiB/s ratio "kestrel batches/interrupts"
for mode in $modes; do
    direct=0; flag=""
    [[ $mode == direct ]] && { direct=1; flag=--direct; }
    # Both tools start cache-mode runs with the whole image in the page cache.
    [[ $mode == cache ]] && cat "$image" >/dev/null
    for p in "${patterns[@]}"; do
        read -r name rw bs qd <<<"$p"
        k_runs=() f_runs=()
        for ((r = 0; r < rounds; r++)); do
            for tool in k f; do
                [[ $((r % 2)) -eq 1 ]] && tool=$([[ $tool == k ]] && echo f || echo k)
                if [[ $tool == k ]]; then
                    out=$("${pin[@]}" "$bench" --image "$image" --rw "$rw" --bs "$bs" --qd "$qd" --seconds "$secs" $flag)
                    k_runs+=("$(kv iops <<<"$out") $(kv mibps <<<"$out") $(kv batches <<<"$out") $(kv interrupts <<<"$out")")
                else
                    f_runs+=("$(fio_run "$rw" "$bs" "$qd" "$direct")")
                fi
            done
        done
        read -r k_iops k_mib batches irqs <<<"$(printf '%s\n' "${k_runs[@]}" | sort -n | sed -n "$(( rounds / 2 + 1 ))p")"
        read -r f_iops f_mib <<<"$(printf '%s\n' "${f_runs[@]}" | sort -n | sed -n "$(( rounds / 2 + 1 ))p")"
        ratio=$(python3 -c "print(f'{$k_iops/$f_iops:.2f}' if $f_iops else 'n/a')")
        printf '%-18s %-6s | %10s %9s | %10s %9s | %6s | %s/%s\n' "$name" "$mode" "$k_iops" "$k_mib" \
            "$f_iops" "$f_mib" "$ratio" "$batches" "$irqs"
    done
done
