#!/usr/bin/env bash
# Builds the L2 (guest) initramfs: busybox-static, /dev/console, an /init (default
# tests/nested/guest-init.sh), the guest case scripts (tests/nested/guest-cases/*.sh -> /cases/)
# with their helpers (tests/nested/guest-lib.sh -> /etc/kestrel/guest-lib.sh)
# and optionally kernel modules from the fetched Debian kernel, loaded in order by init.
#
# usage: build-guest-initramfs.sh OUT.cpio.gz [--modules "virtio_pci virtio_net ..."]
#                                 [--binaries "/usr/sbin/mkfs.ext4 ..."] [--init FILE] [--extra DIR]
#   --modules  module names (or paths under modules/kernel/); dependencies are added first
#   --binaries host executables copied in at their own paths with their shared libraries
#              (a trailing '?' marks one optional)
#   --init     file to use as /init
#   --extra    directory copied over the root (e.g. etc/kestrel/case.sh for a per-image case)
set -euo pipefail
source "$(dirname "$0")/lib.sh"

[[ $# -ge 1 && $1 != -* ]] || nested_die "usage: build-guest-initramfs.sh OUT.cpio.gz [--modules LIST] [--binaries LIST] [--init FILE] [--extra DIR]"
out=$1; shift
modules="" binaries="" init=$nested_root/tests/nested/guest-init.sh extra=""
while [[ $# -gt 0 ]]; do
  case $1 in
    --modules) modules=$2; shift 2 ;;
    --binaries) binaries=$2; shift 2 ;;
    --init) init=$2; shift 2 ;;
    --extra) extra=$2; shift 2 ;;
    *) nested_die "unknown option $1" ;;
  esac
done
[[ -f $init ]] || nested_die "no init script $init"

root=$(mktemp -d); trap 'rm -rf "$root"' EXIT
nested_busybox_root "$root"
install -m 0755 "$init" "$root/init"
mkdir -p "$root/cases" "$root/etc/kestrel"
install -m 0644 "$nested_root/tests/nested/guest-lib.sh" "$root/etc/kestrel/guest-lib.sh"
for c in "$nested_root"/tests/nested/guest-cases/*.sh; do
  [[ -e $c ]] && install -m 0755 "$c" "$root/cases/"
done
if [[ -n $modules ]]; then
  nested_need_kernel
  nested_add_modules "$root" "$modules"
fi
[[ -z $binaries ]] || nested_add_binaries "$root" "$binaries"
[[ -z $extra ]] || cp -a "$extra/." "$root/"
mkdir -p "$(dirname "$out")"
nested_pack "$root" "$out"
echo "build-guest-initramfs: $out ($(stat -c %s "$out") bytes${modules:+, modules: $(tr '\n' ' ' < "$root/etc/kestrel/modules")})"
