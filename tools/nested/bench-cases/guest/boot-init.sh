#!/bin/sh
# /init of tools/bench-boot.sh's guest (/l2/boot.cpio.gz): says when it started, by the guest's
# own clocks, and powers off at once. With bench.dmesg=1 on the command line it first prints the
# kernel's log (printk timestamps) for the start-up breakdown.
mount -t devtmpfs devtmpfs /dev 2>/dev/null
exec </dev/console >/dev/console 2>&1
mount -t proc proc /proc
read -r up idle < /proc/uptime
echo "BENCH-BOOT-INIT uptime=$up"
case " $(cat /proc/cmdline) " in
  *" bench.dmesg=1 "*)
    dmesg | sed 's/^/BENCH-DMESG /'
    echo "BENCH-MEMINFO $(awk '/^(MemTotal|MemFree):/ { printf "%s=%s ", $1, $2 }' /proc/meminfo)" ;;
esac
poweroff -f
sleep 5
