# Sourced by the guest case scripts (tests/nested/guest-cases/*.sh) inside L2, installed at
# /etc/kestrel/guest-lib.sh. Figures go out as `KESTREL-VALUE key value` lines, which the host
# compares with the L1 side's NESTED-VALUE lines (`#@ expect-value`, tests/nested/README.md).

value() {
  echo "KESTREL-VALUE $1 $2"
}

sha256() {
  sha256sum "$1" | cut -d' ' -f1
}

# fail WHY: the reason plus the guest's device-related kernel messages (the cases boot with
# `quiet`, so those never reached the console), then the case script exits 1.
fail() {
  echo "KESTREL-GUEST-FAIL $*"
  dmesg | grep -iE "${GUEST_DMESG:-virtio|pci|vd[a-z]|blk|ext4|rng|vsock|eth[0-9]}" | tail -n 40 |
    sed 's/^/guest-dmesg: /'
  exit 1
}

# wait_for PATH [SECONDS]: drivers probe on insmod, but udev-less device nodes and sysfs
# entries can trail a little under nested TCG.
wait_for() {
  local i=0
  while [ ! -e "$1" ] && [ "$i" -lt "${2:-10}" ]; do
    sleep 1
    i=$((i + 1))
  done
  [ -e "$1" ]
}

# random_size LO HI: a size in bytes, LO <= size < HI, from /dev/urandom.
random_size() {
  local r
  r=$(head -c 4 /dev/urandom | od -An -tu4 | tr -d ' ')
  echo $(( $1 + r % ($2 - $1) ))
}
