#!/bin/sh
# Boot-time benchmark, kestrel and QEMU microvm side by side in this one L1 (tools/bench-boot.sh
# builds the run; settings in /nested/bench/params). Every VMM boots the same Debian vmlinux
# (PVH entry) with /l2/boot.cpio.gz, whose /init (guest/boot-init.sh) prints its uptime and
# TSC and powers off at once; 2 vCPUs, BENCH_MEMORY MiB, console on ttyS0, `quiet`, no devices.
# guest_load's exec timer gives exec -> exit and exec -> the guest's BENCH-BOOT-INIT line on
# L1's clock. VMM names: kestrel or kestrel-* (binary /nested/bin/NAME: a variant under test),
# kestrel-api (/nested/bin/kestrel run --api-sock, configured with curl as in Firecracker's
# getting-started sequence; guest_load stamp dates the InstanceStart request on the same clock,
# so the run also gives InstanceStart -> /init), qemu (-M microvm, its defaults: PIC, PIT, RTC, ACPI, option ROMs) and qemu-lean (-M microvm
# with pit, pic, rtc and option ROMs off, as QEMU's docs suggest for a fast microvm boot).
# Rounds rotate which VMM goes first; a run that does not end with the init line and exit
# status 0 is retried, twice at most.
# Every run's guest also prints its time-stamp counter at /init (KVM starts it at the VMM's
# KVM_CREATE_VCPU), which splits exec -> /init into the VMM's set-up and the guest's part.
# Then, with BENCH_BREAKDOWN_MEMS set, the start-up breakdown for each guest RAM size: one run
# per VMM with bench.dmesg=1 (the guest's printk log), L1's /proc/vmstat deltas and L1 KVM's
# counters at /init, and for each kestrel one run under strace (-f -ttt -T: kestrel's own
# syscalls with timestamps, the teardown included).
#@ timeout 7200
#@ l1-binaries /usr/bin/qemu-system-x86_64 /usr/bin/curl /usr/bin/strace?
#@ allow-line .
. /nested/bench/lib.sh
initrd=/l2/boot.cpio.gz
cmdline="console=ttyS0 reboot=k panic=-1 quiet"

boot_cmd() { # VMM MEMORY_MIB EXTRA_CMDLINE: the command line, one word per line for `set --`
  case $1 in
    kestrel-api)
      echo "/nested/bin/kestrel run --api-sock $api_sock" ;;
    kestrel*)
      echo "/nested/bin/$1 run --kernel /l2/vmlinux --initrd $initrd --cpus 2 --memory ${2}M" ;;
    qemu)
      echo "$QEMU -M microvm -enable-kvm -cpu host -smp 2 -m $2 -nodefaults -no-user-config -display none -serial stdio -no-reboot -kernel /l2/vmlinux -initrd $initrd" ;;
    qemu-lean)
      echo "$QEMU -M microvm,pit=off,pic=off,rtc=off,x-option-roms=off -enable-kvm -cpu host -smp 2 -m $2 -nodefaults -no-user-config -display none -serial stdio -no-reboot -kernel /l2/vmlinux -initrd $initrd" ;;
    *) echo false ;;
  esac
}

api_sock=/tmp/bench-api.sock
api() { # METHOD PATH BODY: one request to kestrel-api's socket; prints the HTTP status
  curl -s -o /tmp/bench-api.out -w '%{http_code}\n' --unix-socket "$api_sock" -X "$1" "http://localhost$2" \
    -H 'Content-Type: application/json' -d "$3"
}

# api_configure MEMORY TAG CMDLINE: kestrel-api's requests, once its socket is up; the last,
# InstanceStart, under guest_load stamp (its line tagged like the run's).
api_configure() {
  local i=0
  while [ ! -S "$api_sock" ] && [ "$i" -lt 600 ]; do sleep 0.05; i=$((i + 1)); done
  { api PUT /boot-source "{\"kernel_image_path\": \"/l2/vmlinux\", \"initrd_path\": \"$initrd\", \"boot_args\": \"$3\"}"
    api PUT /machine-config "{\"vcpu_count\": 2, \"mem_size_mib\": $1}"
    "$LOAD" stamp --label instancestart -- \
      curl -s -o /tmp/bench-api.out -w '%{http_code}\n' --unix-socket "$api_sock" -X PUT http://localhost/actions \
      -H 'Content-Type: application/json' -d '{"action_type": "InstanceStart"}'
  } | awk -v tag="$2" '/^GUEST-LOAD / { sub(/^GUEST-LOAD /, "BENCH-RESULT " tag " "); print; next }
      { codes = codes " " $0 } END { print "BENCH-API " tag " http" codes; fflush() }'
}

# boot_once VMM MEMORY TAG EXTRA_CMDLINE [PREFIX...]: one timed boot, its lines tagged (PREFIX:
# a command the VMM runs under, e.g. strace). Returns 0 when the guest reached /init and the
# VMM exited 0 (and for kestrel-api, every request answered 204).
boot_once() {
  local vmm=$1 mem=$2 tag=$3 extra=$4 cl
  shift 4
  cl="$cmdline${extra:+ $extra}"
  rm -f /tmp/bench-run.out /tmp/bench-api.log "$api_sock"
  [ "$vmm" = kestrel-api ] && api_configure "$mem" "$tag" "$cl" > /tmp/bench-api.log &
  # shellcheck disable=SC2046
  case $vmm in
    kestrel-api) timeout -s KILL "$BENCH_RUN_TIMEOUT" "$LOAD" time --mark BENCH-BOOT-INIT --label boot -- \
                "$@" $(boot_cmd "$vmm" "$mem") ;;
    kestrel*) timeout -s KILL "$BENCH_RUN_TIMEOUT" "$LOAD" time --mark BENCH-BOOT-INIT --label boot -- \
                "$@" $(boot_cmd "$vmm" "$mem") --cmdline "$cl" ;;
    *) timeout -s KILL "$BENCH_RUN_TIMEOUT" "$LOAD" time --mark BENCH-BOOT-INIT --label boot -- \
                "$@" $(boot_cmd "$vmm" "$mem") -append "$cl" ;;
  esac < /dev/null 2>&1 | bench_tag "$tag"
  wait
  [ -s /tmp/bench-api.log ] && cat /tmp/bench-api.log
  [ "$vmm" != kestrel-api ] || grep -q '^BENCH-API .* http 204 204 204$' /tmp/bench-api.log || return 1
  grep -q 'BENCH-RESULT .* time label=boot rc=0 .*exec_to_mark_ms=[0-9]' /tmp/bench-run.out
}

echo "BENCH-SETUP vmms=$BENCH_VMMS rounds=$BENCH_ROUNDS memory=$BENCH_MEMORY thp=$(tr ' ' , < /sys/kernel/mm/transparent_hugepage/enabled) thp_defrag=$(tr ' ' , < /sys/kernel/mm/transparent_hugepage/defrag) l1_memtotal_kb=$(awk '/^MemTotal:/ { print $2 }' /proc/meminfo)"
# Exec cost alone (dynamic loading, static constructors, option parsing): each binary's
# --version, three times, and once the dynamic loader's own statistics.
for vmm in $BENCH_VMMS; do
  case $vmm in qemu*) bin=$QEMU ;; kestrel-api) continue ;; *) bin=/nested/bin/$vmm ;; esac
  for i in 1 2 3; do
    "$LOAD" time --label version -- "$bin" --version < /dev/null 2>&1 | grep GUEST-LOAD | bench_tag "vmm=$vmm exec=$i"
  done
  LD_DEBUG=statistics "$bin" --version 2>&1 < /dev/null | grep -E 'total startup time|relocations' |
    sed "s/^ *[0-9]*: */BENCH-LDSTATS vmm=$vmm /"
done

failed=0
round=1
while [ "$round" -le "$BENCH_ROUNDS" ]; do
  for vmm in $(bench_order "$round" "$BENCH_VMMS"); do
    try=1
    until boot_once "$vmm" "$BENCH_MEMORY" "vmm=$vmm round=$round" ""; do
      echo "BENCH-RETRY vmm=$vmm round=$round try=$try"
      try=$((try + 1))
      [ "$try" -le 3 ] || { failed=1; break; }
    done
  done
  round=$((round + 1))
done

for mem in $BENCH_BREAKDOWN_MEMS; do
  for vmm in $BENCH_VMMS; do
    [ "$vmm" = kestrel-api ] && continue   # the same start-up as kestrel's once started
    before=$(bench_l1_stats)
    BENCH_HOOK_INIT=$(bench_kvm_stats_hook)
    boot_once "$vmm" "$mem" "vmm=$vmm mem=$mem breakdown=dmesg" bench.dmesg=1 ||
      echo "BENCH-RETRY vmm=$vmm mem=$mem breakdown (not retried)"
    BENCH_HOOK_INIT=""
    bench_kvm_stats "vmm=$vmm mem=$mem"
    echo "BENCH-L1STATS vmm=$vmm mem=$mem before $before"
    echo "BENCH-L1STATS vmm=$vmm mem=$mem after $(bench_l1_stats)"
    case $vmm in kestrel*)
      command -v strace > /dev/null || continue
      boot_once "$vmm" "$mem" "vmm=$vmm mem=$mem breakdown=strace" "" \
        strace -f -ttt -T -o /tmp/bench-strace.out \
        -e trace=execve,mmap,munmap,madvise,ioctl,openat,clone,clone3,exit_group
      # Everything but the vCPUs' KVM_RUN traffic, plus the first KVM_RUN (the guest's first
      # instruction); then the last lines unfiltered (the guest's power-off exit, the teardown).
      awk -v tag="vmm=$vmm mem=$mem" '
        /KVM_RUN/ && seen++ { if (/unfinished/) pending[$1] = 1; next }
        /resumed>/ && pending[$1] { delete pending[$1]; next }
        { print "BENCH-STRACE " tag " " $0 }' /tmp/bench-strace.out | head -n 400
      echo "BENCH-STRACE vmm=$vmm mem=$mem kvm_run_lines=$(grep -c KVM_RUN /tmp/bench-strace.out)"
      tail -n 30 /tmp/bench-strace.out | sed "s/^/BENCH-STRACE-TAIL vmm=$vmm mem=$mem /"
      rm -f /tmp/bench-strace.out ;;
    esac
  done
done
echo "BENCH-DONE failed=$failed"
exit "$failed"
