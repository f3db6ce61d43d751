#!/usr/bin/env bash
# Builds the L1 initramfs for the nested test host: busybox-static, modules of the fetched
# Debian kernel (irqbypass, kvm, ccp if present, kvm_amd, tun, loop, fuse; bridge, veth,
# sch_ingress, cls_u32 and act_mirred for pod networking and the migration benchmark),
# kestrel with its shared libraries and dynamic loader (and from the same build, when built,
# kestrel-podnet and the pod cases' files: tools/build-pod-image.sh, tools/build-cri-files.sh), the L2 artefacts under /l2 (vmlinuz, vmlinux, initrd.cpio.gz) and the
# case scripts under /nested/cases. /init is tools/nested/l1-init.sh.
#
# usage: build-l1.sh OUT.cpio[.gz] [--kestrel PATH | --no-kestrel] [--cases "NAME|PATH ..."]
#                    [--guest-initrd FILE] [--guest-modules LIST] [--guest-binaries LIST]
#                    [--l1-binaries LIST] [--python] [--extra DIR]...
#   --kestrel       kestrel binary (default build/vmm/kestrel)
#   --cases         case names (tests/nested/cases/NAME.sh) or script paths, run in this order
#                   (default: every tests/nested/cases/*.sh, sorted)
#   --guest-initrd  L2 initramfs to use (default: built with build-guest-initramfs.sh)
#   --guest-modules modules for that default L2 initramfs
#   --guest-binaries host executables (with their libraries) for that default L2 initramfs
#   --l1-binaries   host executables (with their libraries) for L1 itself (e.g. /usr/sbin/debugfs)
#   --python        Debian's python3 and its standard library in L1 (tools/nested/lib.sh)
#   --extra         directory copied over the L1 root last (repeatable)
set -euo pipefail
here=$(dirname "$0")
source "$here/lib.sh"

[[ $# -ge 1 && $1 != -* ]] || nested_die "usage: build-l1.sh OUT.cpio[.gz] [--kestrel PATH|--no-kestrel] [--cases LIST] [--guest-initrd FILE] [--guest-modules LIST] [--guest-binaries LIST] [--l1-binaries LIST] [--python] [--extra DIR]..."
out=$1; shift
kestrel=$nested_root/build/vmm/kestrel cases="" guest_initrd="" guest_modules="" guest_binaries="" l1_binaries="" python=0
extra=()
while [[ $# -gt 0 ]]; do
  case $1 in
    --kestrel) kestrel=$2; shift 2 ;;
    --no-kestrel) kestrel=""; shift ;;
    --cases) cases=$2; shift 2 ;;
    --guest-initrd) guest_initrd=$2; shift 2 ;;
    --guest-modules) guest_modules=$2; shift 2 ;;
    --guest-binaries) guest_binaries=$2; shift 2 ;;
    --l1-binaries) l1_binaries=$2; shift 2 ;;
    --python) python=1; shift ;;
    --extra) extra+=("$2"); shift 2 ;;
    *) nested_die "unknown option $1" ;;
  esac
done
nested_need_kernel
if [[ -n $kestrel ]]; then
  [[ -x $kestrel ]] || nested_die "no kestrel binary at $kestrel (build it: ninja -C build)"
fi

root=$(mktemp -d); trap 'rm -rf "$root" "$root.pod"' EXIT
nested_busybox_root "$root"
install -m 0755 "$here/l1-init.sh" "$root/init"
nested_add_modules "$root" "virt/lib/irqbypass.ko arch/x86/kvm/kvm.ko drivers/crypto/ccp/ccp.ko? arch/x86/kvm/kvm-amd.ko drivers/net/tun.ko net/bridge/bridge.ko drivers/block/loop.ko? fs/fuse/fuse.ko? drivers/net/veth.ko net/sched/sch_ingress.ko net/sched/cls_u32.ko net/sched/act_mirred.ko"

mkdir -p "$root/nested/bin" "$root/nested/cases" "$root/l2"
if [[ -n $kestrel ]]; then
  install -m 0755 "$kestrel" "$root/nested/bin/kestrel"
  nested_add_libraries "$root" "$kestrel"
  kbuild=$(cd "$(dirname "$kestrel")/.." && pwd)
  # One VM held open for the whole L1 boot (kvm_anchor.cpp: without it L1 hangs now and then
  # as KVM's static keys flip at each case's first VM).
  [[ -x $kbuild/tools/kvm-anchor ]] || nested_die "no $kbuild/tools/kvm-anchor (build it: ninja -C $kbuild)"
  install -m 0755 "$kbuild/tools/kvm-anchor" "$root/nested/bin/kvm-anchor"
  podnet=$kbuild/cni-shim/net/kestrel-podnet
  if [[ -x $podnet ]]; then
    install -m 0755 "$podnet" "$root/nested/bin/kestrel-podnet"
    nested_add_libraries "$root" "$podnet"
  fi
  # The pod cases' files (the shim on containerd's PATH, the pod VM's initramfs, a local OCI
  # image): tools/build-pod-image.sh, when the shim and agent were built beside kestrel.
  if [[ -x $kbuild/cni-shim/shim/containerd-shim-kestrel-v2 && -x $nested_root/tools/build-pod-image.sh ]]; then
    "$nested_root/tools/build-pod-image.sh" "$root.pod" --build "$kbuild" >&2
    cp -a "$root.pod/." "$root/"
    rm -rf "$root.pod"
  fi
  # The CRI case's client, Python gRPC modules and sandbox image, when tests/cri was built.
  if [[ -s $kbuild/tests/cri/api_pb2.py ]]; then
    "$nested_root/tools/build-cri-files.sh" "$root.pod" --build "$kbuild" >&2
    cp -a "$root.pod/." "$root/"
    rm -rf "$root.pod"
  fi
fi
[[ -z $l1_binaries ]] || nested_add_binaries "$root" "$l1_binaries"
[[ $python == 0 ]] || nested_add_python "$root"

if [[ -z $cases ]]; then
  cases=$(cd "$nested_root/tests/nested/cases" && ls -- *.sh 2>/dev/null | LC_ALL=C sort | sed 's/\.sh$//' | tr '\n' ' ')
fi
: > "$root/nested/cases.list"
for c in $cases; do
  if [[ $c == */* ]]; then src=$c; else src=$nested_root/tests/nested/cases/$c.sh; fi
  [[ -f $src ]] || nested_die "no case script $src"
  name=$(basename "$src" .sh)
  install -m 0755 "$src" "$root/nested/cases/$name.sh"
  echo "$name" >> "$root/nested/cases.list"
done
install -m 0644 "$nested_root/tests/nested/case-lib.sh" "$root/nested/case-lib.sh"

cp "$nested_kernel/vmlinuz" "$root/l2/vmlinuz"
cp "$nested_kernel/vmlinux" "$root/l2/vmlinux"
if [[ -n $guest_initrd ]]; then
  cp "$guest_initrd" "$root/l2/initrd.cpio.gz"
else
  "$here/build-guest-initramfs.sh" "$root/l2/initrd.cpio.gz" ${guest_modules:+--modules "$guest_modules"} \
    ${guest_binaries:+--binaries "$guest_binaries"} >/dev/null
fi
for d in "${extra[@]}"; do cp -a "$d/." "$root/"; done

mkdir -p "$(dirname "$out")"
nested_pack "$root" "$out"
echo "build-l1: $out ($(( $(stat -c %s "$out") / 1048576 )) MiB; kestrel: ${kestrel:-none}; cases: $(tr '\n' ' ' < "$root/nested/cases.list"))"
