#!/usr/bin/env bash
# Builds what the nested CRI case (tests/nested/cases/pod-cri.sh) needs in L1 beyond the pod
# files of tools/build-pod-image.sh, as a directory copied over L1's root:
#   /nested/cri/cri-client.py, api_pb2.py   the CRI client (tests/cri) and its generated messages
#   /nested/cri/cri-stream.py            Exec/Attach streams over WebSocket (tests/cri)
#   /usr/lib/python3/dist-packages/{grpc,google,six.py,websocket} (+ their shared libraries):
#                                        Debian's python3-grpcio, python3-protobuf and
#                                        python3-websocket (python3 itself comes from the
#                                        case's `#@ l1-python`)
#   /usr/share/kestrel/pause-oci.tar     the local sandbox image docker.io/kestrel/pause:test
#                                        (tests/cri/pause.cpp, static), imported with ctr: no
#                                        registry involved
#
# usage: build-cri-files.sh OUTDIR [--build DIR]   (DIR: the meson build dir, default build)
set -euo pipefail
source "$(dirname "$0")/nested/lib.sh"
[[ $# -ge 1 && $1 != -* ]] || nested_die "usage: build-cri-files.sh OUTDIR [--build DIR]"
out=$1; shift
build=$nested_root/build
while [[ $# -gt 0 ]]; do
  case $1 in
    --build) build=$2; shift 2 ;;
    *) nested_die "unknown option $1" ;;
  esac
done
stubs=$build/tests/cri/api_pb2.py pause=$build/tests/cri/kestrel-pause
[[ -s $stubs && -x $pause ]] || nested_die "no $stubs or $pause (tools/setup.sh, then ninja -C $build)"
dist=/usr/lib/python3/dist-packages
for m in grpc google/protobuf six.py websocket; do
  [[ -e $dist/$m ]] || nested_die "no $dist/$m (apt-get install python3-grpcio python3-protobuf python3-websocket)"
done

rm -rf "$out"; mkdir -p "$out/nested/cri" "$out/usr/share/kestrel" "$out$dist/google"
install -m 0755 "$nested_root/tests/cri/cri-client.py" "$out/nested/cri/cri-client.py"
install -m 0755 "$nested_root/tests/cri/cri-stream.py" "$out/nested/cri/cri-stream.py"
install -m 0644 "$stubs" "$out/nested/cri/api_pb2.py"
(cd "$dist" && find grpc google/protobuf six.py websocket -name __pycache__ -prune -o -print | cpio -pdm --quiet "$out$dist") ||
  nested_die "copying python modules failed"
# grpc imports asyncio and ctypes: the standard library's extension modules (copied by
# `#@ l1-python` without their libraries) need theirs too (libffi for _ctypes).
py=$(readlink -f /usr/bin/python3)
while read -r so; do nested_add_libraries "$out" "$so"; done < <(find "$out$dist" "/usr/lib/$(basename "$py")/lib-dynload" -name '*.so')

# The sandbox image (image-spec v1.0 layout, one layer holding /pause); the index entry's
# io.containerd.image.name annotation names it for `ctr image import`.
python3 - "$pause" "$out/usr/share/kestrel/pause-oci.tar" "$nested_root/tools" <<'PY'
import sys
sys.path.insert(0, sys.argv[3])
import oci_image
oci_image.write(sys.argv[2], 'docker.io/kestrel/pause:test',
                oci_image.layer(lambda t: oci_image.add(t, 'pause', open(sys.argv[1], 'rb').read(), 0o755)),
                {'Entrypoint': ['/pause'], 'WorkingDir': '/'})
PY
echo "build-cri-files: $out ($(du -sh "$out" | cut -f1); image docker.io/kestrel/pause:test)"
