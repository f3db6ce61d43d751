#!/bin/sh
# Block and network benchmark, kestrel and QEMU side by side in this one L1 (tools/bench-guest.sh
# builds the run; settings in /nested/bench/params). Both VMMs boot the same Debian vmlinux
# (PVH) with the same initramfs (/l2/bench-io.cpio.gz: guest_load + guest/bench-io.sh), 2 vCPUs,
# 512 MiB, one virtio-blk-pci disk and one virtio-net-pci NIC, so the guest uses the same
# virtio_pci driver path under both:
#   kestrel: --disk /dev/loop0,direct (O_DIRECT, io_uring; one queue per vCPU)
#   QEMU:    -M microvm,pcie=on  virtio-blk-pci on the same /dev/loop0 with cache=none (O_DIRECT)
#            and aio=io_uring (num-queues defaults to one per vCPU too); virtio-net-pci on the
#            same tap, vhost off (kestrel has no vhost either)
# /dev/loop0 is a loop device over a file in L1's tmpfs (tmpfs refuses O_DIRECT; a block device
# takes it). Rounds rotate which VMM goes first. A run that ends without the guest's
# `KESTREL-GUEST-CASE-END bench-io rc=0` (e.g. QEMU 7.2's SVM emulation fault,
# tests/nested/README.md) is retried, twice at most.
#@ timeout 7200
#@ l1-binaries /usr/bin/qemu-system-x86_64
#@ allow-line .
. /nested/bench/lib.sh
initrd=/l2/bench-io.cpio.gz
img=/tmp/bench-vda.img
loopdev=/dev/loop0
tap=kt0
mac=52:54:00:12:34:56
# initcall_blacklist=cmos_init, for both VMMs: QEMU microvm's guest otherwise spends 20-60 s of
# nested time in rtc-cmos's update-in-progress polling (with rtc=off it probes unclaimed ports),
# which would make every QEMU boot several times longer than the I/O it is there for.
cmdline="console=ttyS0 reboot=k panic=-1 quiet initcall_blacklist=cmos_init kestrel.case=bench-io bench.seconds=$BENCH_SECONDS bench.mib=$BENCH_NET_MIB bench.patterns=$BENCH_PATTERNS bench.blk=$BENCH_BLK"

dd if=/dev/zero of="$img" bs=1M count="$BENCH_DISK_MIB" 2>/dev/null || exit 1
[ -b "$loopdev" ] || { echo "bench-io: no $loopdev (loop.ko not loaded in L1)"; exit 1; }
losetup "$loopdev" "$img" || exit 1
tunctl -t "$tap" > /dev/null || exit 1
ip addr add 10.0.2.1/24 dev "$tap" && ip link set "$tap" up || exit 1
echo "BENCH-SETUP vmms=$BENCH_VMMS rounds=$BENCH_ROUNDS seconds=$BENCH_SECONDS net_mib=$BENCH_NET_MIB disk_mib=$BENCH_DISK_MIB thp=$(cat /sys/kernel/mm/transparent_hugepage/enabled | tr ' ' ,) loadavg_l1=$(cut -d' ' -f1-3 /proc/loadavg | tr ' ' ,)"

run_vmm() { # VMM
  case $1 in
    kestrel|kestrel-noseccomp)
      # kestrel-noseccomp (tools/bench-guest.sh -S): the same without its seccomp filters.
      seccomp=kill; [ "$1" = kestrel-noseccomp ] && seccomp=off
      timeout -s KILL "$BENCH_RUN_TIMEOUT" "$KESTREL" run --kernel /l2/vmlinux --initrd "$initrd" --cpus 2 --memory 512M \
        --disk "$loopdev,direct" --net "tap=$tap,mac=$mac" --seccomp "$seccomp" --log-level info --cmdline "$cmdline" ;;
    qemu)
      timeout -s KILL "$BENCH_RUN_TIMEOUT" "$QEMU" -M microvm,pcie=on -enable-kvm -cpu host -smp 2 -m 512 -nodefaults -no-user-config \
        -display none -serial stdio -no-reboot \
        -kernel /l2/vmlinux -initrd "$initrd" -append "$cmdline" \
        -drive "file=$loopdev,format=raw,if=none,id=vda,cache=none,aio=io_uring" \
        -device virtio-blk-pci,drive=vda \
        -netdev "tap,id=net0,ifname=$tap,script=no,downscript=no,vhost=off" \
        -device "virtio-net-pci,netdev=net0,mac=$mac,romfile=" ;;
    *) echo "bench-io: unknown VMM $1"; return 2 ;;
  esac
}

# -P (BENCH_PROFILE=1): perf samples all of L1 (cpu-clock; TCG has no PMU) while the guest runs
# its block patterns; the report per run is printed as BENCH-PROF lines.
if [ "${BENCH_PROFILE:-0}" = 1 ] && command -v perf > /dev/null; then
  BENCH_HOOK_START="perf record -a -e cpu-clock -F 499 -o /tmp/bench-perf.data > /tmp/bench-perf.log 2>&1 & echo \$! > /tmp/bench-perf.pid"
  BENCH_HOOK_STOP="kill -INT \$(cat /tmp/bench-perf.pid); rm -f /tmp/bench-perf.pid; sleep 3"
  # perf's first start (libraries, kallsyms) takes seconds under TCG: not inside a measured run.
  perf record -a -e cpu-clock -o /tmp/bench-perf.warm -- sleep 1 > /dev/null 2>&1
  rm -f /tmp/bench-perf.warm
fi
profile_report() { # TAG
  # A guest that died before its block patterns ended leaves perf running.
  [ -f /tmp/bench-perf.pid ] && kill -INT "$(cat /tmp/bench-perf.pid)" 2>/dev/null && sleep 3
  rm -f /tmp/bench-perf.pid
  [ -s /tmp/bench-perf.data ] || return 0
  perf report -i /tmp/bench-perf.data --stdio --no-children --sort comm,dso --percent-limit 1 2>/dev/null |
    grep -v '^#' | grep . | head -n 25 | sed "s/^/BENCH-PROF $1 comm,dso /"
  perf report -i /tmp/bench-perf.data --stdio --no-children --sort comm,sym --percent-limit 0.7 2>/dev/null |
    grep -v '^#' | grep . | head -n 40 | sed "s/^/BENCH-PROF $1 comm,sym /"
  rm -f /tmp/bench-perf.data /tmp/bench-perf.pid
}

failed=0
round=1
while [ "$round" -le "$BENCH_ROUNDS" ]; do
  for vmm in $(bench_order "$round" "$BENCH_VMMS"); do
    try=1
    while :; do
      "$LOAD" tcp-sink --listen 5001 > /tmp/bench-sink.out 2>&1 &
      sink=$!
      "$LOAD" tcp-source --listen 5002 --mib "$BENCH_NET_MIB" > /tmp/bench-source.out 2>&1 &
      source=$!
      echo "BENCH-RUN vmm=$vmm round=$round try=$try"
      rm -f /tmp/bench-run.out
      run_vmm "$vmm" < /dev/null 2>&1 | bench_tag "vmm=$vmm round=$round try=$try"
      kill "$sink" "$source" 2>/dev/null
      wait "$sink" "$source" 2>/dev/null
      profile_report "vmm=$vmm round=$round"
      if grep -q 'KESTREL-GUEST-CASE-END bench-io rc=0' /tmp/bench-run.out; then
        echo "BENCH-RUN-OK vmm=$vmm round=$round try=$try"
        break
      fi
      echo "BENCH-RETRY vmm=$vmm round=$round try=$try (the guest's bench-io did not end with rc=0)"
      try=$((try + 1))
      [ "$try" -le 3 ] || { failed=1; break; }
    done
  done
  round=$((round + 1))
done
losetup -d "$loopdev"
ip link del "$tap" 2>/dev/null || tunctl -d "$tap" > /dev/null
rm -f "$img"
echo "BENCH-DONE failed=$failed"
exit "$failed"
