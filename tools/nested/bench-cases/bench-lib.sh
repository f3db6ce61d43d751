# Sourced by the benchmark cases (tools/nested/bench-cases/*.sh) inside L1, where
# tools/bench-guest.sh and tools/bench-boot.sh install it as /nested/bench/lib.sh next to
# /nested/bench/params (the run's settings, shell assignments). These are benchmarks, not
# tests: every run's figures go to the serial log as `BENCH-RESULT vmm=V round=R ...` lines
# for the host script's table, and nothing here judges a speed.
. /nested/bench/params
LOAD=/nested/bin/guest_load
KESTREL=${KESTREL:-/nested/bin/kestrel}
QEMU=/usr/bin/qemu-system-x86_64

# bench_order ROUND "A B ...": the VMMs in the order this round runs them, rotated by one each
# round so that no VMM always goes first (L1's page cache, THP pool and TCG caches drift).
bench_order() {
  set -- "$1" $2
  local round=$1 n i
  shift
  n=$#
  i=$(( (round - 1) % n ))
  while [ "$i" -gt 0 ]; do
    set -- "$@" "$1"
    shift
    i=$((i - 1))
  done
  echo "$@"
}

# bench_tag TAG: passes a VMM's output through, turning the guest's (or guest_load
# time's) `GUEST-LOAD mode k=v...` lines into `BENCH-RESULT TAG mode k=v...`
# and keeping a copy in /tmp/bench-run.out for the success check.
# Also tagged: the boot guest's BENCH-BOOT-INIT / BENCH-BOOT-CLOCK / BENCH-MEMINFO / BENCH-DMESG
# lines (as `init`, `clock`, `meminfo`, `dmesg`). TAG is "vmm=V round=R" plus any further key=value words.
# With BENCH_HOOK_START / BENCH_HOOK_STOP set, the first runs (via system()) when the guest's
# BENCH-GUEST line goes by and the second at the first tcp result or the case's end (the
# block patterns' span: bench-io's profiler); BENCH_HOOK_INIT runs when BENCH-BOOT-INIT goes by.
bench_tag() {
  awk -v tag="$1" -v hook_start="${BENCH_HOOK_START:-}" -v hook_stop="${BENCH_HOOK_STOP:-}" \
      -v hook_init="${BENCH_HOOK_INIT:-}" '
    { sub(/\r$/, "") }
    hook_init != "" && /BENCH-BOOT-INIT / && !inited { inited = 1; system(hook_init) }
    hook_start != "" && /BENCH-GUEST / && !started { started = 1; system(hook_start) }
    hook_stop != "" && started && !stopped && (/GUEST-LOAD tcp-/ || /KESTREL-GUEST-CASE-END/) { stopped = 1; system(hook_stop) }
    /GUEST-LOAD / { sub(/.*GUEST-LOAD /, "BENCH-RESULT " tag " ") }
    /BENCH-BOOT-INIT / { sub(/.*BENCH-BOOT-INIT /, "BENCH-RESULT " tag " init ") }
    /BENCH-MEMINFO / { sub(/.*BENCH-MEMINFO /, "BENCH-RESULT " tag " meminfo ") }
    /BENCH-BOOT-CLOCK / { sub(/.*BENCH-BOOT-CLOCK /, "BENCH-RESULT " tag " clock ") }
    /BENCH-DMESG / { sub(/.*BENCH-DMESG /, "BENCH-RESULT " tag " dmesg ") }
    { print; print > "/tmp/bench-run.out"; fflush() }'
}

# bench_l1_stats: one line of L1 counters whose deltas around a run say what the VMM cost L1
# (page faults, transparent huge pages faulted in, guest RAM left in L1 after the run).
bench_l1_stats() {
  awk '/^(pgfault|thp_fault_alloc|thp_fault_fallback|pgalloc_normal) / { printf "%s=%s ", $1, $2 }' /proc/vmstat
  awk '/^MemFree:/ { printf "memfree_kb=%s", $2 }' /proc/meminfo
}

# bench_kvm_stats_hook: a command for BENCH_HOOK_INIT that records L1 KVM's debugfs counters
# (sums over the live VMs: exits, nested page faults, 4K/2M mappings in the nested page tables)
# once, as the guest's /init line goes by; bench_kvm_stats TAG then prints them as
# `BENCH-KVMSTAT TAG name=value ...`. One read per run: an earlier version polled every
# 0.5 s and L1 hung once during such a run (cause not found; polling is not needed).
bench_kvm_stats_hook() {
  [ -d /sys/kernel/debug/kvm ] || mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
  cat > /tmp/bench-kvmstat.sh <<'SH'
cd /sys/kernel/debug/kvm 2>/dev/null || exit 0
for f in exits pf_taken pf_fixed io_exits mmio_exits halt_exits irq_exits insn_emulation pages_4k pages_2m; do
  [ -r "$f" ] && printf ' %s=%s' "$f" "$(cat "$f")"
done > /tmp/bench-kvmstat
SH
  rm -f /tmp/bench-kvmstat
  echo "sh /tmp/bench-kvmstat.sh"
}
bench_kvm_stats() {
  [ -s /tmp/bench-kvmstat ] && echo "BENCH-KVMSTAT $1$(cat /tmp/bench-kvmstat)"
  rm -f /tmp/bench-kvmstat
}
