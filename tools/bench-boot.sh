#!/usr/bin/env bash
# Boot time, kestrel next to QEMU's microvm in one nested-host boot: the same Debian vmlinux
# (PVH entry), 2 vCPUs, 512 MiB, and a small initramfs whose /init prints its uptime and powers
# off at once (tools/nested/bench-cases/guest/boot-init.sh). The L1 half,
# tools/nested/bench-cases/bench-boot.sh, runs the VMMs in rotating order and times each run
# with guest_load's exec timer on L1's clock: exec -> exit, exec -> the guest's /init line.
# Prints per VMM the medians over rounds (exec -> exit, exec -> /init, split by the guest's TSC
# at /init into the VMM's set-up before KVM_CREATE_VCPU and the guest's part), kestrel/QEMU for
# each figure, and for kestrel-api its InstanceStart -> /init next to the CLI's exec -> /init.
# With -B, also the start-up breakdown per guest RAM size (guest printk log, L1 page-fault and
# THP counters, L1 KVM's nested-paging counters, kestrel's syscalls under strace).
#
#   tools/bench-boot.sh [-n ROUNDS] [-M MEMORY_MIB] [-B "128 512 2048"] [-v "VMM ..."]
#                       [-x NAME=KESTREL_BINARY]... [-b BUILD_DIR | -k KESTREL]
#
# VMMs (-v, default "kestrel kestrel-api qemu qemu-lean"): kestrel (CLI options); kestrel-api
# (`run --api-sock`, configured with curl: PUT /boot-source, /machine-config, then
# InstanceStart); qemu = -M microvm with its defaults; qemu-lean = microvm with pit, pic, rtc
# and option ROMs off. -x adds a kestrel variant as VMM kestrel-NAME (e.g. a build with a
# start-up change under test). Defaults: 5 rounds, 512 MiB, build dir `build`.
# Env: KESTREL_NESTED_OUT (default /tmp/nested-bench).
# Never a timed assertion: exit 0 when every VMM completed every round, 1 otherwise, 2 on
# usage errors. Timings are TCG-distorted: compare the VMMs with each other only.
set -euo pipefail
bench_root=$(cd "$(dirname "$0")/.." && pwd)
bench_name=bench-boot
rounds=5 memory=512 breakdown="" vmms="kestrel kestrel-api qemu qemu-lean" build=$bench_root/build kestrel=""
variants=()
usage() { sed -n '13,14p' "$0" | sed 's/^# *//' >&2; exit 2; }
while getopts "n:M:B:v:x:b:k:h" opt; do
  case $opt in
    n) rounds=$OPTARG ;;
    M) memory=$OPTARG ;;
    B) breakdown=$OPTARG ;;
    v) vmms=$OPTARG ;;
    x) variants+=("$OPTARG") ;;
    b) build=$OPTARG ;;
    k) kestrel=$OPTARG ;;
    *) usage ;;
  esac
done
shift $((OPTIND - 1))
[[ $# -eq 0 ]] || usage
for n in "$rounds" "$memory" $breakdown; do
  [[ $n =~ ^[1-9][0-9]*$ ]] || { echo "bench-boot: -n, -M and -B want positive integers" >&2; exit 2; }
done
for v in $vmms; do
  [[ $v =~ ^(kestrel|kestrel-api|qemu|qemu-lean)$ ]] || { echo "bench-boot: unknown VMM '$v' in -v" >&2; exit 2; }
done
for x in "${variants[@]}"; do
  [[ $x =~ ^([A-Za-z0-9_]+)=(.+)$ && ${BASH_REMATCH[1]} != api && -x ${BASH_REMATCH[2]} ]] ||
    { echo "bench-boot: -x wants NAME=EXECUTABLE (NAME not api), got '$x'" >&2; exit 2; }
done
# shellcheck source=tools/nested/bench-cases/bench-host.sh
source "$bench_root/tools/nested/bench-cases/bench-host.sh"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
bench_build "$build" "$kestrel" "$tmp"
bench_extra "$tmp/l1"
for x in "${variants[@]}"; do
  [[ $x =~ ^([A-Za-z0-9_]+)=(.+)$ ]]
  # Same libraries as the main binary (built from the same tree), which build-l1.sh copies.
  install -m 0755 "${BASH_REMATCH[2]}" "$tmp/l1/nested/bin/kestrel-${BASH_REMATCH[1]}"
  vmms="$vmms kestrel-${BASH_REMATCH[1]}"
done
# busybox, guest/boot-init.sh as /init and guest_load (to read the TSC): ~1.5 MiB compressed.
mkdir -p "$tmp/guest/usr/bin"
install -m 0755 "$bench_load" "$tmp/guest/usr/bin/guest_load"
"$bench_root/tools/nested/build-guest-initramfs.sh" "$tmp/l1/l2/boot.cpio.gz" \
  --init "$bench_root/tools/nested/bench-cases/guest/boot-init.sh" --extra "$tmp/guest" >&2

cat > "$tmp/l1/nested/bench/params" <<EOF
BENCH_VMMS="$vmms"
BENCH_ROUNDS=$rounds
BENCH_MEMORY=$memory
BENCH_BREAKDOWN_MEMS="$breakdown"
BENCH_RUN_TIMEOUT=600
EOF
nv=$(wc -w <<<"$vmms")
bench_run_l1 "$bench_root/tools/nested/bench-cases/bench-boot.sh" "$tmp/l1" \
  $(( 300 + 3 * rounds * nv * 120 + $(wc -w <<<"$breakdown") * nv * 600 ))

python3 - "$bench_serial" "$rounds" "$memory" "$(nproc)" "$bench_loadavg_after" "$vmms" <<'PY'
import re, statistics, sys
serial, rounds, memory, ncpu, load_after, vmms = sys.argv[1:]
vmms = vmms.split()
lines = [l.strip() for l in open(serial, 'rb').read().decode('utf-8', 'replace').splitlines()]
kv = lambda s: dict(t.split('=', 1) for t in s.split() if '=' in t)
runs = {}     # vmm -> [{'exit':, 'init':, 'uptime':}]
bd = {}       # (vmm, mem) -> dict
stamps = {}   # (vmm, mem) -> [(t, text)]
stats = {}    # (vmm, mem) -> {before/after: dict}
kvmstat = {}  # (vmm, mem) -> L1 KVM debugfs counters at /init
execs = {}    # vmm -> [exec -> exit of BINARY --version, ms]
ldstats = [l[len('BENCH-LDSTATS '):] for l in lines if l.startswith('BENCH-LDSTATS ')]
for l in lines:
    m = re.match(r'BENCH-RESULT (.*?) (time|stamp|init|clock|tsc|meminfo|dmesg) (.*)', l)
    if m:
        tag, kind, rest = kv(m.group(1)), m.group(2), m.group(3)
        vmm = tag['vmm']
        if 'exec' in tag:
            if kind == 'time':
                t = kv(rest)
                execs.setdefault(vmm, []).append((float(t['exec_to_exit_ms']), int(t.get('minflt', -1))))
            continue
        if 'round' in tag:
            r = runs.setdefault(vmm, {}).setdefault(tag['round'], {})
        elif tag.get('breakdown') == 'dmesg':
            r = bd.setdefault((vmm, int(tag['mem'])), {})
        else:
            r = bd.setdefault((vmm, int(tag['mem'])), {}).setdefault('strace_run', {})
        if kind == 'time':
            t = kv(rest)
            r['exit'], r['init'], r['rc'] = float(t['exec_to_exit_ms']), float(t['exec_to_mark_ms']), t['rc']
            r['minflt'], r['sys'] = int(t.get('minflt', -1)), float(t.get('sys_ms', -1))
            r['t0_ms'] = int(t.get('t0_ns', -1)) / 1e6
        elif kind == 'stamp':
            r['start_ms'] = int(kv(rest)['mono_ns']) / 1e6
        elif kind == 'init':
            r['uptime'] = float(kv(rest)['uptime']) * 1000
        elif kind == 'clock' and 'sched_offset' in kv(rest):
            r['clock_ms'] = int(kv(rest)['sched_offset']) / 1e6
        elif kind == 'tsc':
            t = kv(rest)
            r['tsc'], r['mhz'] = int(t['cycles']), float(t.get('mhz', 0))
        elif kind == 'meminfo':
            r['meminfo'] = rest
        elif kind == 'dmesg':
            d = re.match(r'\[\s*([0-9.]+)\] (.*)', rest)
            if d:
                r.setdefault('dmesg', []).append((float(d.group(1)) * 1000, d.group(2)))
        continue
    m = re.match(r'BENCH-KVMSTAT vmm=(\S+) mem=(\d+) (.*)', l)
    if m:
        kvmstat[(m.group(1), int(m.group(2)))] = {k: int(v) for k, v in kv(m.group(3)).items()}
        continue
    m = re.match(r'BENCH-L1STATS vmm=(\S+) mem=(\d+) (before|after) (.*)', l)
    if m:
        stats.setdefault((m.group(1), int(m.group(2))), {})[m.group(3)] = {k: int(v) for k, v in kv(m.group(4)).items()}
        continue
    m = re.match(r'BENCH-STRACE vmm=(\S+) mem=(\d+) (\d+)\s+([0-9.]+) (.*)', l)
    if m:
        stamps.setdefault((m.group(1), int(m.group(2))), []).append((float(m.group(4)), m.group(5)))

def med(xs):
    return statistics.median(xs) if xs else None

def f(x, fmt='.0f'):
    return format(x, fmt) if x is not None else '-'

setup = next((l for l in lines if l.startswith('BENCH-SETUP ')), '')
print(f'\nbench-boot: exec -> exit of a guest whose /init powers off at once; same vmlinux (PVH), '
      f'2 vCPUs, {memory} MiB; medians of {rounds} rotating rounds, L1 clock, ms')
print(f'  L1 set-up: {setup[len("BENCH-SETUP "):]}')
print(f'  host: {ncpu} CPUs, load average at the end {load_after} (other work on the machine disturbs TCG)')
# KVM starts the vCPUs' TSC at 0 at the first KVM_CREATE_VCPU, so the guest's TSC at /init (over
# its rate) dates vCPU creation on L1's clock; its uptime dates the start of its own clock. For
# kestrel, which leaves kvm-clock alone, the clock's reading at that start (sched offset, ns since
# KVM_CREATE_VM) also dates KVM_CREATE_VM; QEMU sets kvm-clock (KVM_SET_CLOCK), so not for it.
print('  VMM set-up = exec -> first KVM_CREATE_VCPU (of which exec -> KVM_CREATE_VM, kestrel only); pre-clock =')
print('  vCPU creation -> guest clock start (VMM\'s last steps + guest until kvm-clock); guest boot = clock start -> /init')
print(f'{"VMM":16} {"n":>3} {"exec->exit":>11} {"p90":>7} {"exec->/init":>12} {"VMM set-up":>11} {"(->VM)":>7} '
      f'{"pre-clock":>10} {"guest boot":>11} {"/init->exit":>12} {"VMM faults":>11} {"sys ms":>7}')
rows = {}
for vmm in vmms:
    rs = [r for r in runs.get(vmm, {}).values()
          if r.get('rc') == '0' and r.get('init', -1) >= 0 and 'uptime' in r and r.get('mhz')]
    if not rs:
        print(f'{vmm:16}   0   (no completed run)')
        continue
    for r in rs:
        r['vcpu'] = r['init'] - r['tsc'] / r['mhz'] / 1e3   # exec -> vCPU creation
        if 'clock_ms' in r and vmm.startswith('kestrel'):
            r['vm'] = r['init'] - r['uptime'] - r['clock_ms']
    ex = sorted(r['exit'] for r in rs)
    p90 = ex[max(0, -(-9 * len(ex) // 10) - 1)]
    row = (med(ex), med([r['init'] for r in rs]), med([r['vcpu'] for r in rs]),
           med([r['init'] - r['uptime'] - r['vcpu'] for r in rs]), med([r['uptime'] for r in rs]),
           med([r['exit'] - r['init'] for r in rs]), med([r['vm'] for r in rs if 'vm' in r]))
    rows[vmm] = row
    flt = med([r['minflt'] for r in rs if r.get('minflt', -1) >= 0])
    sys_ms = med([r['sys'] for r in rs if r.get('sys', -1) >= 0])
    print(f'{vmm:16} {len(rs):>3} {f(row[0]):>11} {f(p90):>7} {f(row[1]):>12} {f(row[2]):>11} {f(row[6]):>7} '
          f'{f(row[3]):>10} {f(row[4]):>11} {f(row[5]):>12} {f(flt):>11} {f(sys_ms):>7}')
for k in [v for v in vmms if v.startswith('kestrel')]:
    for q in [v for v in vmms if v.startswith('qemu')]:
        if k in rows and q in rows:
            a, b = rows[k], rows[q]
            ratio = lambda i: f'{a[i] / b[i]:.2f}x' if a[i] is not None and b[i] else '-'
            print(f'{k}/{q}: exec->exit {ratio(0)}, exec->/init {ratio(1)}, VMM set-up {ratio(2)}, '
                  f'pre-clock {ratio(3)}, guest boot {ratio(4)}')
api = [r for r in runs.get('kestrel-api', {}).values()
       if r.get('rc') == '0' and r.get('init', -1) >= 0 and r.get('start_ms') and r.get('t0_ms', -1) > 0]
if api:
    # Both on L1's CLOCK_MONOTONIC: guest_load stamp just before curl's exec, time's exec + mark.
    s2i = sorted(r['t0_ms'] + r['init'] - r['start_ms'] for r in api)
    cli = rows.get('kestrel', (None, None))[1]
    print(f'kestrel-api: InstanceStart request -> /init median {med(s2i):.0f} ms (min {s2i[0]:.0f}, max {s2i[-1]:.0f}, '
          f'n {len(s2i)}); exec -> InstanceStart request {med([r["start_ms"] - r["t0_ms"] for r in api]):.0f} ms '
          f'(socket up, two PUTs); kestrel CLI exec -> /init {f(cli)} ms'
          + (f'; InstanceStart->/init / CLI exec->/init {med(s2i) / cli:.2f}x' if cli else ''))
if execs:
    print('exec alone (BINARY --version: dynamic loading, constructors, option parsing), median ms / page faults: ' +
          ', '.join(f'{v} {med([a for a, _ in x]):.0f} / {med([b for _, b in x]):.0f}' for v, x in execs.items()))
for l in ldstats:
    print(f'  ld.so: {l}')
print('goal (reference only, never a failure): kestrel <= 0.3x QEMU microvm exec -> exit')

if bd:
    # The same split as the main table, one run per VMM and guest RAM size, with what L1 paid.
    print('\nstart-up breakdown per guest RAM (one run each, ms on L1\'s clock; columns as above):')
    print('  L1 pgfault/THP = L1\'s page faults and huge pages faulted in over the whole run; L1 KVM at /init: exits,')
    print('  nested page faults fixed, nested page-table mappings 4K/2M')
    print(f'{"VMM":16} {"MiB":>5} {"exec->/init":>12} {"VMM set-up":>11} {"(->VM)":>7} {"pre-clock":>10} {"guest boot":>11} '
          f'{"L1 pgfault":>11} {"L1 THP":>7} {"exits":>8} {"npf fixed":>9} {"4K/2M maps":>11}')
    order = lambda x: (x[1], vmms.index(x[0]) if x[0] in vmms else 99)
    for (vmm, mem) in sorted(bd, key=order):
        r = bd[(vmm, mem)]
        st = stats.get((vmm, mem), {})
        d = lambda k: (st['after'].get(k, 0) - st['before'].get(k, 0)) if 'after' in st and 'before' in st else None
        ks = kvmstat.get((vmm, mem), {})
        if 'init' not in r or 'tsc' not in r or not r.get('mhz') or 'uptime' not in r:
            print(f'{vmm:16} {mem:>5}   (run incomplete)')
            continue
        vcpu = r['init'] - r['tsc'] / r['mhz'] / 1e3
        vm = r['init'] - r['uptime'] - r['clock_ms'] if 'clock_ms' in r and vmm.startswith('kestrel') else None
        print(f'{vmm:16} {mem:>5} {f(r["init"]):>12} {f(vcpu):>11} {f(vm):>7} {f(r["init"] - r["uptime"] - vcpu):>10} '
              f'{f(r["uptime"]):>11} {f(d("pgfault")):>11} {f(d("thp_fault_alloc")):>7} {f(ks.get("exits")):>8} '
              f'{f(ks.get("pf_fixed")):>9} {f(ks.get("pages_4k")) + "/" + f(ks.get("pages_2m")):>11}')
    # The guest's printk clock: where the kernel's own time went, up to /init.
    marks = [('mem init', r'^Memory: '), ('smp up', r'^smp: Brought up'), ('acpi', r'^ACPI: Interpreter enabled'),
             ('kvm-clock cs', r'Switched to clocksource kvm-clock'), ('initramfs', r'^Trying to unpack rootfs'),
             ('initrd freed', r'^Freeing initrd memory'), ('run /init', r'^Run /init')]
    print('\nguest printk timestamps (ms since the guest clock started):')
    print(f'{"VMM":16} {"MiB":>5} ' + ' '.join(f'{n:>12}' for n, _ in marks))
    for (vmm, mem) in sorted(bd, key=order):
        dm = bd[(vmm, mem)].get('dmesg', [])
        cells = [f(next((t for t, text in dm if re.search(rx, text)), None)) for _, rx in marks]
        print(f'{vmm:16} {mem:>5} ' + ' '.join(f'{c:>12}' for c in cells))
    # kestrel's own start-up under strace, relative to its execve.
    if stamps:
        print('\nkestrel under strace (ms after execve; strace slows every syscall, so read the shape, not the sums):')
        events = [('guest RAM mmap', lambda s, mem: s.startswith('mmap(NULL, ') and int(s.split(',')[1]) >= mem << 20),
                  ('KVM_CREATE_VM', lambda s, mem: 'KVM_CREATE_VM' in s),
                  ('SET_USER_MEM', lambda s, mem: 'KVM_SET_USER_MEMORY_REGION' in s),
                  ('kernel copied', lambda s, mem: s.startswith('munmap(') and int(s.split(',')[1].split(')')[0]) > 1 << 20),
                  ('CREATE_VCPU 0', lambda s, mem: 'KVM_CREATE_VCPU, 0' in s),
                  ('first KVM_RUN', lambda s, mem: 'KVM_RUN' in s)]
        print(f'{"VMM":16} {"MiB":>5} ' + ' '.join(f'{n:>15}' for n, _ in events) + '  slow syscalls (>= 5 ms)')
        for (vmm, mem), ss in sorted(stamps.items(), key=lambda x: x[0][1]):
            t0 = ss[0][0]
            cells, slow = [], []
            at = 0   # the events happen in this order: each is searched for after the previous one
            for name, pred in events:
                i = next((i for i in range(at, len(ss)) if pred(ss[i][1], mem)), None)
                cells.append(f((ss[i][0] - t0) * 1000 if i is not None else None, '.0f'))
                at = i if i is not None else at
            for t, s in ss:
                m = re.search(r'<([0-9.]+)>$', s)
                if m and float(m.group(1)) >= 0.005 and 'KVM_RUN' not in s:
                    slow.append(f'{s.split("(")[0]}@{(t - t0) * 1000:.0f}:{float(m.group(1)) * 1000:.0f}ms')
            print(f'{vmm:16} {mem:>5} ' + ' '.join(f'{c:>15}' for c in cells) + '  ' + ' '.join(slow[:6]))

done = next((l for l in lines if l.startswith('BENCH-DONE ')), None)
for l in lines:
    if l.startswith('BENCH-RETRY '):
        print('  ' + l)
ok = done == 'BENCH-DONE failed=0' and all(v in rows for v in vmms)
if not ok:
    print(f'bench-boot: not every VMM completed ({done or "no BENCH-DONE line"}); see the serial log')
sys.exit(0 if ok else 1)
PY
