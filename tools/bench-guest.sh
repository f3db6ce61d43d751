#!/usr/bin/env bash
# Guest-side block and network benchmark, kestrel next to QEMU in one nested-host boot: the
# same Debian vmlinux, initramfs, 2 vCPUs and 512 MiB under both, driven from inside the guest
# by tools/bench/guest_load (so KVM exits, ioeventfds, irqfds and the guest's virtio_pci driver
# are all in the figures). The L1 half is tools/nested/bench-cases/bench-io.sh (which says how
# each VMM is configured), the guest half guest/bench-io.sh:
#   block (O_DIRECT on /dev/vda, both VMMs O_DIRECT + io_uring on the same loop device):
#     4k-randread-qd1, 4k-randread-qd32, 128k-seqread-qd4, 128k-seqwrite-qd4
#   net (guest <-> L1 over one tap, no vhost): tcp-guest-to-l1 (N MiB), tcp-l1-to-guest (N MiB)
# Prints per pattern and VMM the median over rounds of IOPS, MB/s (10^6 bytes/s) and the
# guest-clock latency percentiles, and kestrel/QEMU per pattern (throughput; latency ratios
# are QEMU/kestrel so that > 1 is kestrel ahead everywhere).
#
#   tools/bench-guest.sh [-r ROUNDS] [-s SECONDS] [-m NET_MIB] [-d DISK_MIB] [-p blk,net]
#                        [-o BLOCK_PATTERN,...] [-P] [-S] [-b BUILD_DIR | -k KESTREL]
#
# -S also runs kestrel-noseccomp (kestrel --seccomp off) in the same rounds and prints
# kestrel/kestrel-noseccomp per pattern: what the seccomp filters cost.
# -o runs only the named block patterns; -P profiles all of L1 with perf (cpu-clock samples)
# while each guest runs its block patterns and prints the top processes, objects and symbols
# per VMM (round 1): with -o 4k-randread-qd1, the profile of one pattern.
# Defaults: 3 rounds, 5 s per block pattern, 32 MiB per stream, a 256 MiB disk, build dir
# `build` (ninja builds vmm/kestrel and tools/guest_load there). Env: KESTREL_NESTED_OUT
# (default /tmp/nested-bench: run-tests' lock, L1 image and serial log).
# Never a timed assertion: exit 0 when both VMMs completed every round, 1 otherwise, 2 on
# usage errors. Timings are TCG-distorted (tests/nested/README.md): compare the two VMMs
# with each other, never with host figures.
set -euo pipefail
bench_root=$(cd "$(dirname "$0")/.." && pwd)
bench_name=bench-guest
rounds=3 seconds=5 net_mib=32 disk_mib=256 patterns=blk,net only=all profile=0 build=$bench_root/build kestrel=""
usage() { sed -n '14,15p' "$0" | sed 's/^# *//' >&2; exit 2; }
vmms="kestrel qemu"
while getopts "r:s:m:d:p:o:PSb:k:h" opt; do
  case $opt in
    r) rounds=$OPTARG ;;
    s) seconds=$OPTARG ;;
    m) net_mib=$OPTARG ;;
    d) disk_mib=$OPTARG ;;
    p) patterns=$OPTARG ;;
    o) only=$OPTARG ;;
    P) profile=1 ;;
    S) vmms="kestrel kestrel-noseccomp qemu" ;;
    b) build=$OPTARG ;;
    k) kestrel=$OPTARG ;;
    *) usage ;;
  esac
done
shift $((OPTIND - 1))
[[ $# -eq 0 ]] || usage
for n in "$rounds" "$seconds" "$net_mib" "$disk_mib"; do
  [[ $n =~ ^[1-9][0-9]*$ ]] || { echo "bench-guest: -r, -s, -m and -d want positive integers" >&2; exit 2; }
done
[[ $patterns =~ ^(blk|net)(,(blk|net))?$ ]] || { echo "bench-guest: -p is blk, net or blk,net" >&2; exit 2; }
[[ $only =~ ^(all|((4k-randread-qd1|4k-randread-qd32|128k-seqread-qd4|128k-seqwrite-qd4),?)+)$ ]] ||
  { echo "bench-guest: -o takes 4k-randread-qd1, 4k-randread-qd32, 128k-seqread-qd4, 128k-seqwrite-qd4 (comma-separated)" >&2; exit 2; }
# shellcheck source=tools/nested/bench-cases/bench-host.sh
source "$bench_root/tools/nested/bench-cases/bench-host.sh"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
bench_build "$build" "$kestrel" "$tmp"
bench_extra "$tmp/l1"
[[ $profile == 0 ]] || bench_add_perf "$tmp/l1"

# The benchmark's own L2 initramfs: the suite's guest init running guest/bench-io.sh, with
# guest_load and the three virtio modules.
mkdir -p "$tmp/l2/cases" "$tmp/l2/usr/bin"
install -m 0755 "$bench_root/tools/nested/bench-cases/guest/bench-io.sh" "$tmp/l2/cases/bench-io.sh"
install -m 0755 "$bench_load" "$tmp/l2/usr/bin/guest_load"
"$bench_root/tools/nested/build-guest-initramfs.sh" "$tmp/l1/l2/bench-io.cpio.gz" \
  --modules "virtio_pci virtio_blk virtio_net" --extra "$tmp/l2" >&2

run_timeout=$(( 240 + 6 * seconds + net_mib ))
cat > "$tmp/l1/nested/bench/params" <<EOF
BENCH_VMMS="$vmms"
BENCH_ROUNDS=$rounds
BENCH_SECONDS=$seconds
BENCH_NET_MIB=$net_mib
BENCH_DISK_MIB=$disk_mib
BENCH_PATTERNS=$patterns
BENCH_BLK=$only
BENCH_PROFILE=$profile
BENCH_RUN_TIMEOUT=$run_timeout
EOF
bench_run_l1 "$bench_root/tools/nested/bench-cases/bench-io.sh" "$tmp/l1" $(( 300 + rounds * $(wc -w <<< "$vmms") * 3 * run_timeout ))

python3 - "$bench_serial" "$rounds" "$seconds" "$net_mib" "$(nproc)" "$bench_loadavg_after" "$vmms" <<'PY'
import re, statistics, sys
serial, rounds, seconds, net_mib, ncpu, load_after, vmms = sys.argv[1:]
vmms = vmms.split()
lines = open(serial, 'rb').read().decode('utf-8', 'replace').splitlines()
res = {}      # (vmm, label) -> [dict per round]
ok_runs = {tuple(re.findall(r'(?:vmm|round|try)=(\S+)', l)) for l in lines if l.startswith('BENCH-RUN-OK ')}
profiles = {}  # vmm -> [lines] (round 1)
setup = next((l for l in lines if l.startswith('BENCH-SETUP ')), '')
retries = [l for l in lines if l.startswith('BENCH-RETRY ')]
done = next((l for l in lines if l.startswith('BENCH-DONE ')), None)
for l in lines:
    p = re.match(r'BENCH-PROF vmm=(\S+) round=1 (.*)', l.strip())
    if p:
        profiles.setdefault(p.group(1), []).append(p.group(2))
        continue
    m = re.match(r'BENCH-RESULT vmm=(\S+) round=(\d+) try=(\d+) (\S+) (.*)', l.strip())
    if not m or m.group(4) not in ('blk', 'tcp-send', 'tcp-recv') or m.group(1, 2, 3) not in ok_runs:
        continue
    kv = dict(t.split('=', 1) for t in m.group(5).split() if '=' in t)
    if kv.get('label') == 'warmup':
        continue
    res.setdefault((m.group(1), kv['label']), []).append(kv)
blk = ['4k-randread-qd1', '4k-randread-qd32', '128k-seqread-qd4', '128k-seqwrite-qd4']
net = ['tcp-guest-to-l1', 'tcp-l1-to-guest']
def med(vmm, label, key):
    v = [float(r[key]) for r in res.get((vmm, label), []) if key in r]
    return statistics.median(v) if v else None
def f(x, fmt):
    return format(x, fmt) if x is not None else '-'
print(f'\nbench-guest: kestrel vs QEMU (microvm,pcie=on) in one nested L1, medians of {rounds} rounds '
      f'({seconds} s per block pattern, {net_mib} MiB per stream)')
print(f'  L1 set-up: {setup[len("BENCH-SETUP "):]}')
print(f'  host: {ncpu} CPUs, load average at the end {load_after} (other work on the machine disturbs TCG)')
print(f'{"pattern":18} {"VMM":8} {"IOPS":>8} {"MB/s":>8} {"(MB/s range)":>14} {"p50 us":>9} {"p90 us":>9} {"p99 us":>9} {"n":>2} | kestrel/QEMU')
ok = True
for label in blk + net:
    rows = {}
    for vmm in vmms:
        n = len(res.get((vmm, label), []))
        if not n:
            continue
        rows[vmm] = [med(vmm, label, k) for k in ('iops', 'mbps', 'lat_p50_us', 'lat_p90_us', 'lat_p99_us')]
        i, mb, p50, p90, p99 = rows[vmm]
        mbs = [float(r['mbps']) for r in res[(vmm, label)]]
        rng = f'{min(mbs):.1f}-{max(mbs):.1f}'
        print(f'{label:18} {vmm:8} {f(i, ".0f"):>8} {f(mb, ".1f"):>8} {rng:>14} {f(p50, ".0f"):>9} {f(p90, ".0f"):>9} {f(p99, ".0f"):>9} {n:>2} |', end='')
        if vmm == 'qemu' and 'kestrel' in rows:
            k, q = rows['kestrel'], rows['qemu']
            thr = k[1] / q[1] if q[1] else float('nan')
            lat = ' '.join(f'{nm} {q[j] / k[j]:.2f}x' for j, nm in ((2, 'p50'), (3, 'p90'), (4, 'p99'))
                           if k[j] and q[j])
            print(f' {thr:.2f}x' + (f' (latency QEMU/kestrel: {lat})' if lat else ''), end='')
        if vmm == 'kestrel-noseccomp' and 'kestrel' in rows:
            k, o = rows['kestrel'], rows['kestrel-noseccomp']
            print(f' kestrel/kestrel-noseccomp {k[1] / o[1]:.2f}x' if o[1] else '', end='')
        print()
    if 0 < len(rows) < len(vmms):
        ok = False
for r in retries:
    print('  ' + r)
for vmm, pl in profiles.items():
    print(f'\nL1 profile while the {vmm} guest ran its block patterns (round 1; perf cpu-clock, all CPUs):')
    for l in pl:
        print('  ' + l)
if not res:
    print('bench-guest: no results in the serial log; see it for what went wrong')
    ok = False
if done is None or done != 'BENCH-DONE failed=0':
    print(f'bench-guest: the L1 case did not finish cleanly ({done or "no BENCH-DONE line"})')
    ok = False
print('goal (reference only, never a failure): kestrel >= 1.0x QEMU on every pattern, >= 1.2x at QD32')
sys.exit(0 if ok else 1)
PY
