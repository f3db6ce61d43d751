#!/bin/sh
# Diagnostic "case" (not in the suite): creates and runs many tiny VMs back to back, to make
# the rare nested-host hang (L1 stops at a VM's start; run-tests' heartbeat check catches it
# and asks QEMU's monitor where L1's vCPUs are) happen often enough to study. Alternates a
# 1-vCPU guest that exits at once with a 2-vCPU one that starts its AP. Run (the guest images
# come with --kvm-suite; the kvm suite itself runs after this):
#   tools/nested/run-tests --kvm-suite build --cases tools/nested/diag/vm-create-stress.sh
# STRESS_RUNS in L1's environment cannot be set from the host: edit RUNS below to change it.
#@ timeout 1500
#@ expect-line ^NESTED-VALUE l1.failures 0$
. /nested/case-lib.sh
RUNS=2000
G=/nested/kvm/guests
n=0 fail=0
t0=$(cut -d' ' -f1 /proc/uptime)
while [ "$n" -lt "$RUNS" ]; do
  if [ $((n % 2)) = 0 ]; then
    "$KESTREL" run --kernel "$G/exit_now.elf" --debug-exit > /tmp/st.out 2>&1 < /dev/null; rc=$?
  else
    "$KESTREL" run --kernel "$G/smp_ap.elf" --debug-exit --cpus 2 > /tmp/st.out 2>&1 < /dev/null; rc=$?
  fi
  n=$((n + 1))
  if [ "$rc" != 0 ]; then fail=$((fail + 1)); echo "run $n: rc=$rc: $(tail -n 2 /tmp/st.out | tr '\n' ' ')"; fi
  [ $((n % 100)) = 0 ] && echo "runs $n failures $fail uptime $(cut -d' ' -f1 /proc/uptime)"
done
nested_value l1.runs "$n"
nested_value l1.failures "$fail"
nested_value l1.seconds "$(awk "BEGIN { print $(cut -d' ' -f1 /proc/uptime) - $t0 }")"
