#!/bin/sh
# /init of tools/bench-boot.sh's guest (/l2/boot.cpio.gz): says when it started, by the guest's
# own clock, and powers off at once. With bench.dmesg=1 on the command line (the breakdown runs,
# /l2/boot-probe.cpio.gz, which also holds guest_load) it first reads the time-stamp counter
# (counting from the VMM's KVM_CREATE_VCPU) and then prints the kernel's log.
mount -t devtmpfs devtmpfs /dev 2>/dev/null
exec </dev/console >/dev/console 2>&1
mount -t proc proc /proc
read -r up idle < /proc/uptime
case " $(cat /proc/cmdline) " in
  *" bench.dmesg=1 "*)
    tsc=$(/usr/bin/guest_load tsc)
    echo "BENCH-BOOT-INIT uptime=$up"
    echo "$tsc"
    dmesg | sed 's/^/BENCH-DMESG /'
    echo "BENCH-MEMINFO $(awk '/^(MemTotal|MemFree):/ { printf "%s=%s ", $1, $2 }' /proc/meminfo)" ;;
  *)
    echo "BENCH-BOOT-INIT uptime=$up" ;;
esac
poweroff -f
sleep 5
