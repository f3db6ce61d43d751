#!/usr/bin/env bash
# Pods, kestrel next to runc, in one nested-host boot (issue 10's "Measured side by side"):
# the start of a container that prints one line through `ctr run` (exec -> that line, and
# -> ctr's exit), medians and p90 over ROUNDS, and the memory an idle busybox pod costs (PSS of
# kestrel, guest RAM touched included, + its shim; runc: its shim + the container). The L1
# half is tools/nested/bench-cases/bench-pod.sh. TCG-distorted (L1 is QEMU TCG): compare the
# runtimes with each other only. Never a timed assertion: exit 0 when every run of both
# worked.
#
#   tools/bench-pod.sh [-n ROUNDS] [-b BUILD_DIR]      (defaults: 10 rounds, build dir `build`)
set -euo pipefail
bench_root=$(cd "$(dirname "$0")/.." && pwd)
bench_name=bench-pod
rounds=10 build=$bench_root/build
while getopts "n:b:h" opt; do
  case $opt in
    n) rounds=$OPTARG ;;
    b) build=$OPTARG ;;
    *) sed -n '10p' "$0" | sed 's/^# *//' >&2; exit 2 ;;
  esac
done
[[ $rounds =~ ^[1-9][0-9]*$ ]] || { echo "bench-pod: -n wants a positive integer" >&2; exit 2; }
# shellcheck source=tools/nested/bench-cases/bench-host.sh
source "$bench_root/tools/nested/bench-cases/bench-host.sh"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
bench_build "$build" "" "$tmp"
ninja -C "$build" cni-shim/shim/containerd-shim-kestrel-v2 cni-shim/agent/kestrel-agent >&2
bench_extra "$tmp/l1"
cat > "$tmp/l1/nested/bench/params" <<PARAMS
BENCH_ROUNDS=$rounds
PARAMS
bench_run_l1 "$bench_root/tools/nested/bench-cases/bench-pod.sh" "$tmp/l1" $(( 600 + rounds * 2 * 300 ))

python3 - "$bench_serial" "$rounds" <<'PY'
import re, statistics, sys
serial, rounds = sys.argv[1], int(sys.argv[2])
runs, mem = {}, {}
for l in open(serial, 'rb').read().decode('utf-8', 'replace').splitlines():
    if m := re.search(r'BENCH-RESULT vmm=(\S+) round=(\d+) start_ms=([\d.-]+) exit_ms=([\d.]+) ok=(\d)', l):
        runs.setdefault(m.group(1), []).append((float(m.group(3)), float(m.group(4)), m.group(5) == '1'))
    if m := re.search(r'BENCH-MEM vmm=(\S+) pss_kb=(\d+)', l):
        mem[m.group(1)] = int(m.group(2))
def p90(v):
    v = sorted(v)
    return v[min(len(v) - 1, int(0.9 * len(v) + 0.999999) - 1)]
print(f"bench-pod: ctr run of busybox printing one line, {rounds} rounds, one L1 (QEMU TCG: compare the runtimes only)")
print(f"{'runtime':<8} {'ok':>6} {'start ms median':>16} {'p90':>8} {'to exit median':>15} {'idle pod PSS MiB':>17}")
med = {}
for v in ('runc', 'kestrel'):
    good = [x for x in runs.get(v, []) if x[2]]
    if good:
        med[v] = statistics.median(x[0] for x in good)
        print(f"{v:<8} {len(good):>3}/{rounds:<2} {med[v]:>16.0f} {p90([x[0] for x in good]):>8.0f} "
              f"{statistics.median(x[1] for x in good):>15.0f} {mem.get(v, 0) / 1024:>17.1f}")
    else:
        print(f"{v:<8} {0:>3}/{rounds:<2} {'-':>16} {'-':>8} {'-':>15} {mem.get(v, 0) / 1024:>17.1f}")
for v in ('runc', 'kestrel', 'kestrel-nofpr'):
    if v in mem:
        print(f"idle pod PSS {v:<14} 5 s: {mem[v] / 1024:6.1f} MiB   20 s: {mem.get(v + '@20s', 0) / 1024:6.1f} MiB")
if len(med) == 2:
    print(f"kestrel/runc start: {med['kestrel'] / med['runc']:.2f} (goal <= 2)")
ok = all(len([x for x in runs.get(v, []) if x[2]]) == rounds for v in ('runc', 'kestrel'))
sys.exit(0 if ok else 1)
PY
