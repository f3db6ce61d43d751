#!/usr/bin/env bash
# Builds what the nested pod cases (tests/nested/cases/pod-*.sh) need in L1, as a directory
# to pass to `tools/nested/run-tests --l1-extra DIR`:
#   /usr/share/kestrel/busybox-oci.tar   an OCI image layout (busybox-static, one layer) that
#                                        `ctr image import` reads: no registry involved
#   /usr/share/kestrel/pod-initrd.cpio.gz  the pod VM initramfs (tools/build-agent-initrd.sh)
#   /usr/local/bin/containerd-shim-kestrel-v2 (+ its shared libraries): on containerd's PATH,
#                                        since containerd 1.6 ignores runtime_path
#   /etc/kestrel/shim.json               the shim's VM settings for L1 (kestrel, /l2/vmlinux)
#   /nested/pod-modules/overlay.ko       overlayfs for L1 (containerd's overlayfs snapshotter)
#
# usage: build-pod-image.sh OUTDIR [--build DIR]   (DIR: the meson build dir, default build)
set -euo pipefail
source "$(dirname "$0")/nested/lib.sh"
[[ $# -ge 1 && $1 != -* ]] || nested_die "usage: build-pod-image.sh OUTDIR [--build DIR]"
out=$1; shift
build=$nested_root/build
while [[ $# -gt 0 ]]; do
  case $1 in
    --build) build=$2; shift 2 ;;
    *) nested_die "unknown option $1" ;;
  esac
done
shim=$build/cni-shim/shim/containerd-shim-kestrel-v2
agent=$build/cni-shim/agent/kestrel-agent
[[ -x $shim && -x $agent ]] || nested_die "build the shim and the agent first (ninja -C $build)"
[[ -x /bin/busybox ]] || nested_die "no /bin/busybox (apt-get install busybox-static)"

rm -rf "$out"; mkdir -p "$out/usr/share/kestrel" "$out/usr/local/bin" "$out/etc/kestrel"
install -s -m 0755 "$shim" "$out/usr/local/bin/containerd-shim-kestrel-v2"  # stripped: L1 is an initramfs
nested_add_libraries "$out" "$shim"
"$nested_root/tools/build-agent-initrd.sh" "$out/usr/share/kestrel/pod-initrd.cpio.gz" --agent "$agent" >/dev/null
# L1's own modules lack overlayfs; containerd's overlayfs snapshotter (the usual one, and
# the one whose layers the shim caches images by) needs it: the case insmods this copy.
nested_need_kernel
install -D -m 0644 "$nested_kernel/modules/kernel/fs/overlayfs/overlay.ko" "$out/nested/pod-modules/overlay.ko"
cat > "$out/etc/kestrel/shim.json" <<'JSON'
{"kestrel": "/nested/bin/kestrel", "kernel": "/l2/vmlinux",
 "initrd": "/usr/share/kestrel/pod-initrd.cpio.gz", "vcpus": 1, "memory_mib": 256, "boot_timeout_s": 600}
JSON

# The OCI image (image-spec v1.0: oci-layout, index.json, blobs/sha256/...). The index entry's
# io.containerd.image.name annotation names the image for `ctr image import`.
python3 - "$out/usr/share/kestrel/busybox-oci.tar" "$nested_root/tools" <<'PY'
import sys, tarfile
sys.path.insert(0, sys.argv[2])
import oci_image
def fill(t):
    for d in ('bin', 'etc', 'proc', 'sys', 'dev', 'tmp', 'root'):
        ti = tarfile.TarInfo(d); ti.type = tarfile.DIRTYPE; ti.mode = 0o755; t.addfile(ti)
    oci_image.add(t, 'bin/busybox', open('/bin/busybox', 'rb').read(), 0o755)
    for app in ('sh', 'echo', 'cat', 'uname', 'ls', 'sleep', 'true', 'false', 'id', 'hostname', 'env', 'ps', 'mount', 'tty', 'stty', 'grep'):
        ti = tarfile.TarInfo('bin/' + app); ti.type = tarfile.SYMTYPE; ti.linkname = 'busybox'; t.addfile(ti)
    oci_image.add(t, 'etc/passwd', b'root:x:0:0:root:/root:/bin/sh\n')
    oci_image.add(t, 'etc/group', b'root:x:0:\n')
oci_image.write(sys.argv[1], 'docker.io/kestrel/busybox:test', oci_image.layer(fill),
                {'Env': ['PATH=/bin'], 'Cmd': ['sh'], 'WorkingDir': '/'})
PY
echo "build-pod-image: $out ($(du -sh "$out" | cut -f1); image docker.io/kestrel/busybox:test)"
