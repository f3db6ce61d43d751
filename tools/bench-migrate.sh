#!/usr/bin/env bash
# Live migration, kestrel next to QEMU (-M microvm) in one nested-host boot: the same Debian
# vmlinux and a small initramfs whose /init rewrites DIRTY MiB of its RAM over and over and
# prints a heartbeat (tools/nested/bench-cases/guest/migrate-init.sh), 2 vCPUs, MEMORY MiB,
# migrated over a unix socket to a second instance of the same VMM in L1 with a 50 ms downtime
# target. The L1 half is tools/nested/bench-cases/bench-migrate.sh (how each VMM is driven and
# what its figures are). Prints per VMM the medians over rounds of the total migration time and
# the downtime, and kestrel/QEMU for each.
#
#   tools/bench-migrate.sh [-n ROUNDS] [-M MEMORY_MIB] [-D DIRTY_MIB] [-b BUILD_DIR | -k KESTREL]
#
# Defaults: 5 rounds, 512 MiB, 0 MiB dirtied (idle guest), build dir `build`.
# Never a timed assertion: exit 0 when both VMMs completed every round (and their guests ran
# on at the destination), 1 otherwise, 2 on usage errors. Timings are TCG-distorted (L1 is QEMU
# TCG): compare the VMMs with each other, never with host figures.
set -euo pipefail
bench_root=$(cd "$(dirname "$0")/.." && pwd)
bench_name=bench-migrate
rounds=5 memory=512 dirty=0 build=$bench_root/build kestrel=""
usage() { sed -n '10p' "$0" | sed 's/^# *//' >&2; exit 2; }
while getopts "n:M:D:b:k:h" opt; do
  case $opt in
    n) rounds=$OPTARG ;;
    M) memory=$OPTARG ;;
    D) dirty=$OPTARG ;;
    b) build=$OPTARG ;;
    k) kestrel=$OPTARG ;;
    *) usage ;;
  esac
done
shift $((OPTIND - 1))
[[ $# -eq 0 ]] || usage
[[ $rounds =~ ^[1-9][0-9]*$ && $memory =~ ^[1-9][0-9]*$ && $dirty =~ ^[0-9]+$ ]] ||
  { echo "bench-migrate: -n and -M want positive integers, -D a whole number" >&2; exit 2; }
# shellcheck source=tools/nested/bench-cases/bench-host.sh
source "$bench_root/tools/nested/bench-cases/bench-host.sh"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
bench_build "$build" "$kestrel" "$tmp"
bench_extra "$tmp/l1"
# guest_load (the UDP heartbeat) and virtio-net for both VMMs' transports (kestrel: PCI,
# QEMU microvm: MMIO).
mkdir -p "$tmp/l2/usr/bin"
install -m 0755 "$bench_load" "$tmp/l2/usr/bin/guest_load"
"$bench_root/tools/nested/build-guest-initramfs.sh" "$tmp/l1/l2/migrate.cpio.gz" \
  --init "$bench_root/tools/nested/bench-cases/guest/migrate-init.sh" \
  --modules "virtio_pci virtio_mmio virtio_net" --extra "$tmp/l2" >&2
cat > "$tmp/l1/nested/bench/params" <<PARAMS
BENCH_VMMS="kestrel qemu"
BENCH_ROUNDS=$rounds
BENCH_MEMORY=$memory
BENCH_DIRTY=$dirty
PARAMS
bench_run_l1 "$bench_root/tools/nested/bench-cases/bench-migrate.sh" "$tmp/l1" $(( 300 + rounds * 2 * 240 ))

python3 - "$bench_serial" "$rounds" "$memory" "$dirty" <<'PY'
import re, statistics, sys
serial, rounds, memory, dirty = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
runs = {}
for l in open(serial, 'rb').read().decode('utf-8', 'replace').splitlines():
    m = re.search(r'BENCH-RESULT vmm=(\S+) round=(\d+) total_ms=(\d+) downtime_ms=(\d+) gap_ms=([\d.]+) ok=(\d)', l)
    if m:
        runs.setdefault(m.group(1), []).append((int(m.group(3)), int(m.group(4)), float(m.group(5)), m.group(6) == '1'))
print(f"bench-migrate: {memory} MiB guest, {dirty} MiB rewritten continuously, 2 vCPUs, unix socket in one L1 "
      f"(QEMU TCG: compare the VMMs with each other only)")
print(f"{'VMM':<8} {'ok':>6} {'total ms':>9} {'downtime ms (VMM)':>18} {'heartbeat gap ms':>17}   (medians)")
med = {}
for v in ('kestrel', 'qemu'):
    r = runs.get(v, [])
    good = [x for x in r if x[3]]
    if good:
        med[v] = tuple(statistics.median(x[i] for x in good) for i in range(3))
        print(f"{v:<8} {len(good):>3}/{rounds:<2} {med[v][0]:>9.0f} {med[v][1]:>18.0f} {med[v][2]:>17.1f}")
    else:
        print(f"{v:<8} {0:>3}/{rounds:<2} {'-':>9} {'-':>18} {'-':>17}")
if len(med) == 2:
    ratio = lambda a, b: f"{a / b:.2f}" if b else "-"
    print(f"kestrel/QEMU: total {ratio(med['kestrel'][0], med['qemu'][0])}, "
          f"downtime {ratio(med['kestrel'][1], med['qemu'][1])}, "
          f"heartbeat gap {ratio(med['kestrel'][2], med['qemu'][2])} (below 1: kestrel faster)")
ok = all(len([x for x in runs.get(v, []) if x[3]]) == rounds for v in ('kestrel', 'qemu'))
sys.exit(0 if ok else 1)
PY
