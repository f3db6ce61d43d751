#!/usr/bin/env bash
# Builds a pod VM's initramfs: busybox-static, the kernel modules a pod needs from the fetched
# Debian cloud kernel (.cache/artifacts/kernel: virtio PCI/block/net, virtio-vsock,
# overlay; ext4 is built in) and kestrel-agent. Its /init is a tiny sh script that loads the
# modules, then execs `kestrel-agent --init --listen vsock:PORT` (the agent mounts the rest).
# Reuses the initramfs helpers of tools/nested/lib.sh.
#
# usage: build-agent-initrd.sh OUT.cpio.gz [--agent PATH] [--port N] [--modules "extra ..."]
#   --agent    the statically linked kestrel-agent (default build-agent/cni-shim/agent/kestrel-agent,
#              else build/cni-shim/agent/kestrel-agent)
#   --port     the vsock port the agent listens on (default 1024)
#   --modules  more module names to load after the default ones
set -euo pipefail
source "$(dirname "$0")/nested/lib.sh"

[[ $# -ge 1 && $1 != -* ]] || nested_die "usage: build-agent-initrd.sh OUT.cpio.gz [--agent PATH] [--port N] [--modules LIST]"
out=$1; shift
agent="" port=1024 more=""
while [[ $# -gt 0 ]]; do
  case $1 in
    --agent) agent=$2; shift 2 ;;
    --port) port=$2; shift 2 ;;
    --modules) more=$2; shift 2 ;;
    *) nested_die "unknown option $1" ;;
  esac
done
if [[ -z $agent ]]; then
  for cand in "$nested_root/build-agent/cni-shim/agent/kestrel-agent" "$nested_root/build/cni-shim/agent/kestrel-agent"; do
    [[ -x $cand ]] && { agent=$cand; break; }
  done
fi
[[ -n $agent && -x $agent ]] || nested_die "no kestrel-agent binary (build it, or pass --agent PATH)"
# The initramfs has no libc and no NSS: the agent must be static.
! readelf -l "$agent" 2>/dev/null | grep -q 'program interpreter' || nested_die "$agent is dynamically linked"
[[ $port =~ ^[0-9]+$ ]] || nested_die "--port: not a number: $port"

# Not erofs: the shim builds ext4 images (pass --modules erofs for erofs rootfs images); each
# module loaded costs the pod's boot ~0.1 s (nested host). virtio_balloon: free page
# reporting (shim.json free_page_reporting).
modules="virtio_pci virtio_blk virtio_net vmw_vsock_virtio_transport overlay virtio_balloon $more"

root=$(mktemp -d); trap 'rm -rf "$root"' EXIT
nested_busybox_root "$root"
nested_need_kernel
nested_add_modules "$root" "$modules"
# Stripped: its debug info (11 of 13 MB) would be unpacked, then copied to the tmpfs root,
# in every pod VM's RAM.
install -m 0755 -s "$agent" "$root/sbin/kestrel-agent"
# pivot_root(2) refuses to move the initramfs (rootfs has no parent mount), and every
# container pivots: so init copies itself to a tmpfs and switch_roots there first.
cat > "$root/init" <<INIT
#!/bin/sh
# kestrel pod VM init: load the drivers, move to a tmpfs root, then the agent becomes PID 1.
mount -t proc proc /proc
while read -r m; do
  insmod "/lib/modules/\$m" || echo "kestrel-init: insmod \$m failed"
done < /etc/kestrel/modules
mkdir -p /newroot
mount -t tmpfs -o mode=0755 tmpfs /newroot
for e in /*; do
  case \$e in /newroot|/proc|/lib) ;; *) cp -a "\$e" /newroot/ ;; esac
done
mkdir -p /newroot/proc /newroot/lib
umount /proc
exec switch_root /newroot /sbin/kestrel-agent --init --listen vsock:$port
INIT
chmod 0755 "$root/init"
mkdir -p "$(dirname "$out")"
nested_pack "$root" "$out"
echo "build-agent-initrd: $out ($(stat -c %s "$out") bytes; modules: $(tr '\n' ' ' < "$root/etc/kestrel/modules"))"
