#!/usr/bin/env bash
# bench-net.sh: virtio-net throughput of the device model, no VM, both directions. For
# 1514-byte frames (1500 MTU) and 64 KB TSO super-frames, net-bench runs in its own network
# namespace on fresh taps:
#   tx: a raw writev loop, raw io_uring batches, and the real VirtioNet transmit path driven by
#       the mock driver, into a tap;
#   rx: frames written into one tap cross a bridge to a second, read there by a raw read()
#       loop (the raw tap-to-tap copy loop) or by the real VirtioNet receive path into
#       mock-driver buffers;
# and prints frames/s, Gbit/s and the ratios. Informational only: never a pass/fail on speed.
# Needs root (network namespace + tap) and iproute2.
#
# usage: tools/bench-net.sh
# env:   KESTREL_BUILD (default build) build dir holding devices/net-bench
#        SECONDS_PER_RUN (1, per round), ROUNDS (5), BATCH (64: chains per notify), SIZES ("mtu tso"),
#        DIRS ("tx rx")
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${KESTREL_BUILD:-build}
bench="$root/$build/devices/net-bench"
[[ -x $bench ]] || { echo "bench-net: $bench missing: ninja -C $build devices/net-bench" >&2; exit 1; }
[[ $(id -u) -eq 0 ]] || { echo "bench-net: run as root (network namespace, tap)" >&2; exit 1; }
command -v ip >/dev/null || { echo "bench-net: ip (iproute2) missing" >&2; exit 1; }

echo "host: $(uname -r), $(nproc) CPUs; ${ROUNDS:-5} interleaved rounds of ${SECONDS_PER_RUN:-1}s per mode, batch ${BATCH:-64} chains per notify"
for dir in ${DIRS:-tx rx}; do
    for size in ${SIZES:-mtu tso}; do
        echo "== $dir $size"
        "$bench" --dir "$dir" --size "$size" --seconds "${SECONDS_PER_RUN:-1}" --batch "${BATCH:-64}" \
            --rounds "${ROUNDS:-5}"
    done
done
