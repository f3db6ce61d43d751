#!/usr/bin/env bash
# The main job, end to end, on a fresh Debian 12 machine (as root): install the packages,
# build kestrel, fetch Debian's cloud kernel, and boot a real Linux guest under kestrel to a
# shell prompt: directly when this host has hardware virtualization (vmx/svm and a /dev/kvm that
# is not kvm-pvm), otherwise inside the nested test host (QEMU TCG with an emulated AMD SVM CPU
# running kvm_amd; see tests/nested/README.md).
# On a terminal you get the guest's shell; otherwise a short scripted session runs in it and
# the exit status says whether it worked.
#
# usage: tools/demo.sh [--direct | --nested] [--scripted] [--skip-setup] [--kestrel PATH]
#   --direct/--nested  force where the guest runs; --scripted  no interactive shell even on a
#   terminal; --skip-setup  no tools/setup.sh; --kestrel PATH  use this binary, skip the build
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
art=${KESTREL_ARTIFACTS:-$root/.cache/artifacts}

where=auto scripted=0 setup=1 kestrel=""
while [[ $# -gt 0 ]]; do
  case $1 in
    --direct) where=direct ;;
    --nested) where=nested ;;
    --scripted) scripted=1 ;;
    --skip-setup) setup=0 ;;
    --kestrel) kestrel=$(realpath "$2"); shift ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) echo "demo: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
[[ -t 0 && -t 1 ]] || scripted=1

t_start=$SECONDS
step() { echo; echo "==> [$1/5] $2"; t_step=$SECONDS; }
done_step() { echo "    ($(( SECONDS - t_step )) s)"; }
die() { echo "demo: $*" >&2; exit 1; }

[[ $(id -u) -eq 0 ]] || die "run as root (package installation and /dev/kvm need it): sudo $0"

step 1 "packages (tools/setup.sh)"
if [[ $setup -eq 1 ]]; then
  [[ -x tools/setup.sh ]] || die "tools/setup.sh missing"
  tools/setup.sh
else
  echo "    skipped (--skip-setup)"
fi
done_step

step 2 "building kestrel (meson + ninja in build/)"
if [[ -n $kestrel ]]; then
  echo "    skipped: using $kestrel (--kestrel)"
else
  [[ -f build/build.ninja ]] || meson setup build
  ninja -C build
  kestrel=$root/build/vmm/kestrel
fi
[[ -x $kestrel ]] || die "no kestrel binary at $kestrel"
done_step

step 3 "guest kernel (tools/fetch-kernel.sh)"
tools/fetch-kernel.sh
done_step

if [[ $where == auto ]]; then
  if grep -qwE 'vmx|svm' /proc/cpuinfo && [[ -c /dev/kvm && ! -d /sys/module/kvm_pvm ]]; then
    where=direct
  else
    where=nested
  fi
fi
mode=interactive
[[ $scripted -eq 1 ]] && mode=scripted

step 4 "guest initramfs (busybox + tests/nested/guest-cases/demo.sh)"
if [[ $where == direct ]]; then
  echo "    this host has hardware virtualization: the guest runs directly on /dev/kvm"
  mkdir -p "$root/.cache/demo"
  tools/nested/build-guest-initramfs.sh "$root/.cache/demo/guest.cpio.gz"
else
  if [[ -d /sys/module/kvm_pvm ]]; then
    why="/dev/kvm here is kvm-pvm, which cannot run an unmodified Linux guest"
  else
    why="no vmx/svm CPU flag or no /dev/kvm"
  fi
  echo "    $why: using the nested test host (QEMU TCG, emulated AMD SVM, kvm_amd)"
  echo "    (the L1 initramfs with kestrel and the guest is built in the next step)"
fi
done_step

cmdline_demo="kestrel.case=demo kestrel.demo=$mode"
if [[ $where == direct ]]; then
  step 5 "booting Linux under kestrel (2 vCPUs, 512 MiB, $mode)"
  args=(run --kernel "$art/kernel/vmlinuz" --initrd "$root/.cache/demo/guest.cpio.gz" --cpus 2 --memory 512M
        --cmdline "console=ttyS0 reboot=k panic=-1 $cmdline_demo")
  echo "    $kestrel ${args[*]}"
  if [[ $mode == interactive ]]; then
    echo "    The guest console is this terminal. Leave the guest shell with 'exit' (or Ctrl-D): the guest powers off."
    rc=0; "$kestrel" "${args[@]}" || rc=$?
    echo; echo "demo: kestrel exited $rc after $(( SECONDS - t_start )) s"
    exit "$rc"
  fi
  log=$root/.cache/demo/console.log
  set +e
  timeout 600 "$kestrel" "${args[@]}" < /dev/null 2>&1 | tee "$log"
  rc=${PIPESTATUS[0]}
  set -e
  echo
  if [[ $rc -eq 0 ]] && tr -d '\r' < "$log" | grep -q '^KESTREL-DEMO-DONE' &&
     tr -d '\r' < "$log" | grep -q '^kestrel-guest:.*# nproc'; then
    echo "demo: OK: the guest booted to a shell, ran the session and powered off (kestrel exit 0) in $(( SECONDS - t_start )) s"
    exit 0
  fi
  die "FAILED: kestrel exit $rc; the console log is $log"
fi

step 5 "booting the nested test host, then Linux under kestrel inside it ($mode)"
echo "    Expect about a minute: every instruction of the host kernel is emulated."
if [[ $mode == interactive ]]; then
  echo "    The console (host kernel, then the guest) is this terminal. Leave the guest shell with"
  echo "    'exit' (or Ctrl-D): guest and test host power off. Ctrl-A X quits QEMU at any time."
  exec tools/nested/run-tests --kestrel "$kestrel" --cases "$root/tools/nested/demo-case.sh" --interactive
fi
if tools/nested/run-tests --kestrel "$kestrel" --cases "$root/tools/nested/demo-case.sh" --stream; then
  echo "demo: OK: the guest booted to a shell under kestrel, ran the session and powered off ($(( SECONDS - t_start )) s)"
  exit 0
fi
die "FAILED (serial log: .cache/nested/serial.log)"
