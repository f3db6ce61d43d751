#!/bin/sh
# /init of tools/bench-boot.sh's guest (/l2/boot.cpio.gz, busybox + guest_load): reads the
# time-stamp counter (KVM starts it at the VMM's KVM_CREATE_VCPU), says it has started, with its
# uptime, and powers off at once; after that line, the kvm-clock reading at which the kernel's
# clock started ("sched offset", ns since KVM_CREATE_VM unless the VMM sets the clock: QEMU
# does, kestrel does not). With bench.dmesg=1 on the command line (the breakdown runs) it
# first prints milestone lines of the kernel's log (printk timestamps) and its memory figures.
mount -t devtmpfs devtmpfs /dev 2>/dev/null
exec </dev/console >/dev/console 2>&1
mount -t proc proc /proc
tsc=$(/usr/bin/guest_load tsc)
read -r up idle < /proc/uptime
echo "BENCH-BOOT-INIT uptime=$up"
echo "$tsc"
echo "BENCH-BOOT-CLOCK $(dmesg | sed -n 's/.*sched offset of \([0-9]*\) cycles.*/sched_offset=\1/p')"
case " $(cat /proc/cmdline) " in
  *" bench.dmesg=1 "*)
    # Only the milestones tools/bench-boot.sh reads (and the lines carrying TSC figures): the
    # whole log through an emulated UART costs minutes of nested time under QEMU.
    dmesg | grep -E 'sched offset|tsc: Detected|^\[ *[0-9.]+\] (Memory: |smp: Brought up|ACPI: Interpreter enabled|clocksource: Switched|Trying to unpack|Freeing initrd|Run /init|rtc_cmos|Freeing unused kernel image)' |
      sed 's/^/BENCH-DMESG /'
    echo "BENCH-MEMINFO $(awk '/^(MemTotal|MemFree):/ { printf "%s=%s ", $1, $2 }' /proc/meminfo)" ;;
esac
poweroff -f
sleep 5
