#!/usr/bin/env bash
# Installs kestrel as a containerd runtime (RuntimeClass handler `kestrel`, issue 10 part 5)
# from a build: kestrel and containerd-shim-kestrel-v2 on containerd's PATH (containerd 1.6
# ignores runtime_path), the pod VM's kernel (Debian's cloud kernel, tools/fetch-kernel.sh) and
# initramfs with kestrel-agent (tools/build-agent-initrd.sh), the shim's settings
# /etc/kestrel/shim.json, and a containerd config fragment registering the runtime with the
# CRI plugin. It does not edit containerd's own config.toml: when that does not import the
# fragment's directory yet, it prints the line to add. Safe to run twice.
#
# usage: tools/install-pod-runtime.sh [--build DIR] [--root DIR] [--vcpus N] [--memory-mib N]
#   --build       the meson build dir with vmm/kestrel, cni-shim/shim/…, cni-shim/agent/… (build)
#   --root        install under DIR instead of / (packaging, tests)
#   --vcpus, --memory-mib   the pod VM's defaults when a pod asks for nothing (1, 256)
set -euo pipefail
src=$(cd "$(dirname "$0")/.." && pwd)
build=$src/build root="" vcpus=1 memory=256
die() { echo "install-pod-runtime: $*" >&2; exit 1; }
while [[ $# -gt 0 ]]; do
  case $1 in
    --build) build=$2; shift 2 ;;
    --root) root=$2; shift 2 ;;
    --vcpus) vcpus=$2; shift 2 ;;
    --memory-mib) memory=$2; shift 2 ;;
    *) die "unknown option $1 (see the header of $0)" ;;
  esac
done
[[ $vcpus =~ ^[1-9][0-9]*$ && $memory =~ ^[1-9][0-9]*$ ]] || die "--vcpus and --memory-mib take positive integers"
kestrel=$build/vmm/kestrel
shim=$build/cni-shim/shim/containerd-shim-kestrel-v2
agent=$build/cni-shim/agent/kestrel-agent
for f in "$kestrel" "$shim" "$agent"; do
  [[ -x $f ]] || die "no $f: build first (meson setup $build && ninja -C $build)"
done

echo "install-pod-runtime: the guest kernel"
"$src/tools/fetch-kernel.sh" >&2
kernel=${KESTREL_ARTIFACTS:-$src/.cache/artifacts}/kernel

bin=$root/usr/local/bin share=$root/usr/local/share/kestrel etc=$root/etc/kestrel
frag=$root/etc/containerd/conf.d/kestrel.toml
mkdir -p "$bin" "$share" "$etc" "$(dirname "$frag")"
install -m 0755 "$kestrel" "$bin/kestrel"
install -m 0755 "$shim" "$bin/containerd-shim-kestrel-v2"
install -m 0644 "$kernel/vmlinux" "$share/vmlinux"
echo "install-pod-runtime: the pod VM's initramfs (kestrel-agent)"
"$src/tools/build-agent-initrd.sh" "$share/pod-initrd.cpio.gz" --agent "$agent" >&2

# The shim's settings (cni-shim/shim/pod_vm.hpp reads them; KESTREL_SHIM_CONFIG overrides
# the path). Paths are where they are on the node, without --root.
cat > "$etc/shim.json" <<JSON
{"kestrel": "/usr/local/bin/kestrel", "kernel": "/usr/local/share/kestrel/vmlinux",
 "initrd": "/usr/local/share/kestrel/pod-initrd.cpio.gz", "vcpus": $vcpus, "memory_mib": $memory}
JSON

# containerd 1.6, config version 2: the CRI plugin's runtime `kestrel` (the RuntimeClass
# handler) runs io.containerd.kestrel.v2, i.e. containerd-shim-kestrel-v2 from PATH.
cat > "$frag" <<'TOML'
# kestrel pods (tools/install-pod-runtime.sh): RuntimeClass handler "kestrel".
version = 2

# One VM per pod: the shim groups a pod's containers by the io.kubernetes.cri.sandbox-id
# annotation the CRI plugin puts in every container's spec.
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.kestrel]
  runtime_type = "io.containerd.kestrel.v2"
TOML

echo "install-pod-runtime: installed under ${root:-/}: kestrel, containerd-shim-kestrel-v2 (usr/local/bin), the"
echo "  pod VM's kernel and initramfs (usr/local/share/kestrel), etc/kestrel/shim.json, $frag"
config=$root/etc/containerd/config.toml
if ! grep -qs '^imports *=.*conf\.d' "$config"; then
  echo "install-pod-runtime: containerd does not import the fragment yet: add this line at the top of"
  echo "  /etc/containerd/config.toml (config version 2), then restart containerd:"
  echo '  imports = ["/etc/containerd/conf.d/*.toml"]'
fi
