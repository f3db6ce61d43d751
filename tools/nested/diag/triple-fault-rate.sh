#!/bin/sh
# Diagnostic "case" (not in the suite): how often the 2-vCPU Debian guest dies in the nested
# host (a triple fault: kestrel exit 4), 24 boots alternating the split irqchip and --pit.
# QEMU's TCG SVM emulation mishandles some nested page faults (tests/nested/README.md); L1 loads
# kvm_amd with npt=0 to avoid them (l1-init.sh: drop `npt=0` there to measure the rate with
# nested paging). Run:
#   tools/nested/run-tests --cases tools/nested/diag/triple-fault-rate.sh
#@ timeout 3600
#@ expect-line ^NESTED-VALUE l1.boots \d+$
. /nested/case-lib.sh
BOOTS=24
n=0 tf=0 other=0
while [ "$n" -lt "$BOOTS" ]; do
  pit=; [ $((n % 2)) = 1 ] && pit=--pit
  timeout -s KILL 200 "$KESTREL" run --kernel "$L2/vmlinux" --initrd "$L2/initrd.cpio.gz" --cpus 2 \
    --memory 512M $pit --serial file:/tmp/tf.$n.log --cmdline "console=ttyS0 reboot=k panic=-1 quiet" \
    > /tmp/tf.err 2>&1 < /dev/null
  rc=$?
  n=$((n + 1))
  case $rc in 0) echo "boot $n ${pit:-split}: ok" ;;
    4) tf=$((tf + 1)); echo "boot $n ${pit:-split}: triple fault: $(tail -n 1 /tmp/tf.err)" ;;
    *) other=$((other + 1)); echo "boot $n ${pit:-split}: rc=$rc: $(tail -n 2 /tmp/tf.err | tr '\n' ' ')" ;; esac
done
nested_value l1.boots "$n"
nested_value l1.triple_faults "$tf"
nested_value l1.other_failures "$other"
