#!/usr/bin/env bash
# Installs everything kestrel's build, tests, benchmarks and demo need from Debian 12's
# packages, then fetches the Debian cloud kernel used as test guest. Run as root; safe to
# run again (apt-get is idempotent, the kernel is cached in .cache/).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)

packages=(
  # build
  g++ meson ninja-build pkg-config linux-libc-dev
  liburing-dev libspdlog-dev libfmt-dev libcli11-dev doctest-dev
  # control plane: HTTP on a unix socket, JSON, SHA-256, seccomp; disk import
  libcpp-httplib-dev nlohmann-json3-dev libssl-dev libseccomp-dev qemu-utils curl
  # tests: ACPI disassembler, test guests' toolchain, nested test host and its guests
  acpica-tools binutils python3 qemu-system-x86 busybox-static cpio lz4 xz-utils zstd kmod
  e2fsprogs iproute2 socat
  # fuzzing: libFuzzer (clang 16: the first clang whose C++ front end takes libstdc++ 12's <expected>)
  clang-16 libclang-rt-16-dev
  # benchmarks
  time hyperfine fio
  # pods: containerd shim protocol (protoc + the .proto files of containerd's shim API, its
  # events and types, gogoproto options and google.rpc.Status; ttrpc's Go sources for reference)
  protobuf-compiler libprotobuf-dev golang-github-containerd-containerd-dev
  golang-github-gogo-protobuf-dev golang-github-gogo-googleapis-dev golang-github-containerd-ttrpc-dev
  containerd  # the nested pod cases run containerd 1.6 and ctr in L1
  libnl-route-3-dev containernetworking-plugins  # pods: netlink for cni-shim/net; the CNI bridge + host-local plugins its tests run
  python3-grpcio python3-protobuf python3-websocket dpkg-dev  # CRI case: tests/cri's clients (gRPC, WebSocket); apt-get source unpacks with dpkg-source
)

if [[ $(id -u) -ne 0 ]]; then
  echo "setup: run as root (apt-get install needs it)" >&2; exit 1
fi
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
echo "setup: apt-get update"
apt-get update -qq
if [[ ${#missing[@]} -gt 0 ]]; then
  echo "setup: installing ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  echo "setup: all ${#packages[@]} packages already installed"
fi

# The CRI API's api.proto (tests/cri): Debian ships it only inside containerd's source
# package (vendor/k8s.io/cri-api), so a deb-src entry, the source once into .cache, and only
# that one file extracted from it.
src_list=/etc/apt/sources.list.d/kestrel-src.sources
if ! grep -qs '^Types:.*deb-src' "$src_list"; then
  echo "setup: adding $src_list (deb-src, for containerd's source package)"
  cat > "$src_list" <<'SRC'
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
  apt-get update -qq
fi
cri_api=$root/.cache/cri-api/api.proto
if [[ ! -s $cri_api ]]; then
  mkdir -p "$root/.cache/containerd-src" "$(dirname "$cri_api")"
  (cd "$root/.cache/containerd-src" && ls containerd_*.orig.tar.* >/dev/null 2>&1 ||
     apt-get source --download-only -qq containerd) || { echo "setup: apt-get source containerd failed" >&2; exit 1; }
  orig=$(ls "$root"/.cache/containerd-src/containerd_*.orig.tar.* | head -n 1)
  member=$(tar -tf "$orig" | grep '/vendor/k8s.io/cri-api/pkg/apis/runtime/v1/api.proto$' | head -n 1)
  [[ -n $member ]] || { echo "setup: no CRI api.proto in $orig" >&2; exit 1; }
  tar -xOf "$orig" "$member" > "$cri_api.tmp" && mv "$cri_api.tmp" "$cri_api"
  echo "setup: $cri_api (from $(basename "$orig"))"
fi
"$root/tools/fetch-kernel.sh"
