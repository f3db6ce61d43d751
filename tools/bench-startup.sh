#!/usr/bin/env bash
# Start-up cost of kestrel next to QEMU's microvm machine, measured in one run on this host's
# /dev/kvm: both boot the same PVH guest (tests/guests/exit_now.S) whose first instruction
# writes to the debug-exit port, so the figure is "VMM start + VM set-up + teardown".
#
#   tools/bench-startup.sh [-n RUNS] [-b BUILD_DIR] [-g GUEST.elf] [KESTREL_BINARY]
#
# Without KESTREL_BINARY it runs `ninja -C BUILD_DIR` (default: build) and uses
# BUILD_DIR/vmm/kestrel. Runs alternate between the two VMMs (order flipped every round)
# after one untimed warm-up each. Reports median and p90 wall time, median peak RSS and the
# kestrel/QEMU ratios. The goal line is for reference only: exit status is 0 whenever both
# VMMs could run, 1 if something could not run, 2 on usage errors.
# Env: QEMU (default qemu-system-x86_64).
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
runs=20
build_dir=$repo/build
guest=
kestrel=

usage() { sed -n '7,8p' "$0" | sed 's/^# *//' >&2; exit 2; }
while getopts "n:b:g:h" opt; do
  case $opt in
    n) runs=$OPTARG ;;
    b) build_dir=$OPTARG ;;
    g) guest=$OPTARG ;;
    *) usage ;;
  esac
done
shift $((OPTIND - 1))
[[ $# -le 1 ]] || usage
[[ $runs =~ ^[1-9][0-9]*$ ]] || { echo "bench-startup: -n wants a positive integer" >&2; exit 2; }

if [[ $# -eq 1 ]]; then
  kestrel=$1
else
  ninja -C "$build_dir" >&2
  kestrel=$build_dir/vmm/kestrel
fi
[[ -x $kestrel ]] || { echo "bench-startup: kestrel binary '$kestrel' not found or not executable" >&2; exit 1; }

qemu=${QEMU:-qemu-system-x86_64}
command -v "$qemu" >/dev/null || { echo "bench-startup: '$qemu' not found (apt-get install qemu-system-x86)" >&2; exit 1; }
[[ -x /usr/bin/time ]] || { echo "bench-startup: /usr/bin/time not found (apt-get install time)" >&2; exit 1; }
# Never open /dev/kvm from the shell to probe it: as root a missing node would be created as
# an empty regular file.
if [[ ! -c /dev/kvm ]]; then
  echo "bench-startup: /dev/kvm is missing or not a character device: nothing to measure here" \
       "(run it inside the nested test host)" >&2
  exit 1
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

if [[ -z $guest ]]; then
  guest=$build_dir/tests/guests/exit_now.elf
  if [[ ! -f $guest ]]; then
    # Same recipe as tests/guests/meson.build, so the script also works without a build dir.
    guest=$tmp/exit_now.elf
    "${CXX:-c++}" -x assembler-with-cpp -nostdlib -static -no-pie -I"$repo/tests/guests" \
      -Wl,-T,"$repo/tests/guests/guest.ld" -Wl,--build-id=none -Wl,-z,max-page-size=0x1000 \
      -Wl,-z,noexecstack -Wl,--no-warn-rwx-segments -o "$guest" "$repo/tests/guests/exit_now.S" "$repo/tests/guests/lib.S"
  fi
fi
[[ -f $guest ]] || { echo "bench-startup: guest '$guest' not found" >&2; exit 1; }

python3 - "$runs" "$kestrel" "$qemu" "$guest" "$tmp" <<'EOF'
import math, os, statistics, subprocess, sys, time

runs, kestrel, qemu, guest, tmp = int(sys.argv[1]), *sys.argv[2:]

# Peak RSS comes from GNU time's wait4(): a child forked from Python would start with
# Python's RSS already counted in its ru_maxrss (the high-water mark survives exec), one
# forked from /usr/bin/time starts with time's ~1-2 MiB. That floor is measured below.
vmms = {
    "kestrel": ([kestrel, "run", "--kernel", guest, "--memory", "128M", "--serial", "none", "--debug-exit"], 0),
    "qemu microvm": ([qemu, "-M", "microvm", "-enable-kvm", "-cpu", "host,-arch-capabilities",
                      "-m", "128", "-nodefaults", "-no-user-config", "-display", "none",
                      "-serial", "null", "-device", "isa-debug-exit,iobase=0xf4,iosize=4",
                      "-kernel", guest], 1),   # QEMU exits (0 << 1) | 1
}
report = os.path.join(tmp, "time.out")


def measure(cmd):
    """Returns (wall seconds, peak RSS KiB, exit status, stderr)."""
    start = time.monotonic()
    proc = subprocess.run(["/usr/bin/time", "-f", "%M %x", "-o", report, *cmd],
                          stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, timeout=120)
    wall = time.monotonic() - start
    rss, status = open(report).read().split()[-2:]
    return wall, int(rss), int(status), proc.stderr.decode(errors="replace")


def p90(values):
    ordered = sorted(values)
    return ordered[math.ceil(0.9 * len(ordered)) - 1]   # nearest rank


samples = {name: [] for name in vmms}
broken = []
for name, (cmd, want) in vmms.items():         # warm-up: page cache, first-use costs
    _, _, status, err = measure(cmd)
    if status != want:
        broken.append(f"{name}: exit {status}, expected {want}\n  command: {' '.join(cmd)}\n"
                      + "".join(f"  | {l}\n" for l in err.strip().splitlines()[-8:]))
if broken:
    sys.stderr.write("bench-startup: a VMM could not run the guest:\n" + "".join(broken))
    sys.exit(1)

names = list(vmms)
for i in range(runs):
    for name in (names if i % 2 == 0 else names[::-1]):
        cmd, want = vmms[name]
        wall, rss, status, err = measure(cmd)
        if status != want:
            sys.stderr.write(f"bench-startup: {name} run {i}: exit {status}, expected {want}\n{err}")
            sys.exit(1)
        samples[name].append((wall, rss))

floor = measure(["/bin/true"])[1]
rows = {}
for name in names:
    walls = [w for w, _ in samples[name]]
    rsss = [r for _, r in samples[name]]
    rows[name] = (statistics.median(walls) * 1e3, p90(walls) * 1e3, statistics.median(rsss) / 1024)

k, q = rows["kestrel"], rows["qemu microvm"]
print(f"start-up: {os.path.basename(guest)}, {runs} interleaved runs each, host /dev/kvm, 128 MiB guest")
print(f"{'':14}{'wall median':>13}{'wall p90':>11}{'peak RSS median':>17}")
for name in names:
    wm, wp, rm = rows[name]
    print(f"{name:14}{wm:10.1f} ms{wp:8.1f} ms{rm:13.1f} MiB")
print(f"{'kestrel/QEMU':14}{k[0] / q[0]:12.2f}x{k[1] / q[1]:10.2f}x{k[2] / q[2]:16.2f}x")
print(f"(RSS floor of the measuring wrapper, /usr/bin/time running /bin/true: {floor / 1024:.1f} MiB)")
print("goal: <= 0.2x QEMU wall, <= 6 MiB RSS (reference only, never a failure)")
EOF
