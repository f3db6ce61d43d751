# Sourced by tools/bench-guest.sh and tools/bench-boot.sh (host side, bash): builds kestrel and
# guest_load, assembles the L1 extras (guest_load, the bench case library and settings, QEMU's
# firmware, the benchmark's own L2 initramfs) and runs one L1 through tools/nested/run-tests.
# Needs: $bench_root (checkout), $bench_name (for messages).
bench_die() { echo "$bench_name: $*" >&2; exit 1; }

# bench_build BUILD_DIR KESTREL_OR_EMPTY TMP: sets $bench_kestrel and $bench_load.
bench_build() {
  local build=$1 kestrel=$2 tmp=$3
  if [[ -n $kestrel ]]; then
    bench_kestrel=$kestrel
    # Same flags as tools/meson.build; done here so a given binary needs no build dir.
    bench_load=$tmp/guest_load
    "${CXX:-c++}" -std=c++2b -O2 -static -fno-exceptions -o "$bench_load" "$bench_root/tools/bench/guest_load.cpp" ||
      bench_die "building guest_load failed"
  else
    [[ -d $build ]] || bench_die "no build dir $build (meson setup $build, or give -k KESTREL)"
    ninja -C "$build" vmm/kestrel tools/guest_load >&2 || bench_die "ninja -C $build failed"
    bench_kestrel=$build/vmm/kestrel
    bench_load=$build/tools/guest_load
  fi
  [[ -x $bench_kestrel ]] || bench_die "no kestrel binary at $bench_kestrel"
  "$bench_root/tools/fetch-kernel.sh" >&2 || bench_die "tools/fetch-kernel.sh failed"
  [[ -x /usr/bin/qemu-system-x86_64 ]] || bench_die "no /usr/bin/qemu-system-x86_64 (apt-get install qemu-system-x86)"
  [[ -f /usr/share/qemu/bios-microvm.bin ]] || bench_die "no /usr/share/qemu/bios-microvm.bin (qemu-system-data)"
}

# bench_extra DIR: the L1 files every benchmark needs. QEMU finds its firmware at its default
# data path, so no -L; virtio-net-pci's option ROM is switched off (romfile=) instead of copied.
bench_extra() {
  local dir=$1 f
  mkdir -p "$dir/nested/bin" "$dir/nested/bench" "$dir/usr/share/qemu" "$dir/l2"
  install -m 0755 "$bench_load" "$dir/nested/bin/guest_load"
  install -m 0644 "$bench_root/tools/nested/bench-cases/bench-lib.sh" "$dir/nested/bench/lib.sh"
  for f in bios-microvm.bin pvh.bin linuxboot_dma.bin; do
    [[ -f /usr/share/qemu/$f ]] && cp -L "/usr/share/qemu/$f" "$dir/usr/share/qemu/"
  done
  return 0
}

# bench_add_perf DIR: perf with its libraries into the L1 extras (for -P).
bench_add_perf() {
  command -v perf > /dev/null || bench_die "-P needs perf (apt-get install linux-perf)"
  # shellcheck source=tools/nested/lib.sh
  source "$bench_root/tools/nested/lib.sh"
  nested_add_binaries "$1" "$(command -v perf)"
}

# bench_run_l1 CASE_PATH EXTRA_DIR TIMEOUT_S: one L1 boot running the case; the serial log is
# left at $bench_serial. run-tests' verdict is not the benchmark's: the caller reads the log.
bench_run_l1() {
  local case=$1 extra=$2 timeout=$3 out
  out=${KESTREL_NESTED_OUT:-/tmp/nested-bench}
  bench_serial=$out/serial.log
  if pgrep -f 'qemu-system-x86_64 .*-accel tcg' > /dev/null; then
    echo "$bench_name: another nested L1 is running on this machine; figures will be disturbed (run-tests locks only its own output dir)" >&2
  fi
  echo "$bench_name: host load average before: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
  KESTREL_NESTED_OUT=$out "$bench_root/tools/nested/run-tests" --kestrel "$bench_kestrel" --cases "$case" \
    --l1-extra "$extra" --timeout "$timeout" >&2 || true
  bench_loadavg_after=$(cut -d' ' -f1-3 /proc/loadavg)
  echo "$bench_name: host load average after: $bench_loadavg_after" >&2
  [[ -s $bench_serial ]] || bench_die "no serial log at $bench_serial"
}
