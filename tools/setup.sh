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
"$root/tools/fetch-kernel.sh"
