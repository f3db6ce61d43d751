#!/bin/sh
# Guest half of cad: waits for the i8042 keyboard's input device, reports how Linux found it
# (its PNP line, raw or translated set 2) and the IRQ 1 count, leaves the values the
# SIGINT handler prints, then says READY; guest-init.sh (kestrel.sigint=poweroff) powers off
# when Ctrl-Alt-Del reaches PID 1 as SIGINT.
. /etc/kestrel/guest-lib.sh
GUEST_DMESG='i8042|serio|input|atkbd|keyboard'
tag=$(tr ' ' '\n' < /proc/cmdline | sed -n 's/^kestrel.tag=//p')
# GSI 1 (IOAPIC pin 1) under whatever IRQ number Linux gave it: with no legacy PIC under
# hardware-reduced ACPI it is not 1.
irq1() { awk '/ i8042$/ { print $2 }' /proc/interrupts; }
value "guest.$tag.cad_sysctl" "$(cat /proc/sys/kernel/ctrl-alt-del)"
value "guest.$tag.nopnp_given" "$(grep -c 'i8042.nopnp' /proc/cmdline)"
i=0
while ! grep -qi 'keyboard' /proc/bus/input/devices 2>/dev/null && [ "$i" -lt 30 ]; do sleep 1; i=$((i + 1)); done
grep -qi keyboard /proc/bus/input/devices 2>/dev/null || fail "no keyboard input device"
value "guest.$tag.keyboard" "$(sed -n 's/^N: Name="\(.*keyboard\)"$/\1/p' /proc/bus/input/devices | head -n 1)"
value "guest.$tag.i8042" "$(dmesg | grep -o 'PNP: PS/2 Controller \[[^]]*\] at [^ ]* irq [0-9]*\|PNP detection disabled' | head -n 1)"
value "guest.$tag.irq1_line" "$(awk '/ i8042$/ { print $3, $4, $5 }' /proc/interrupts)"
value "guest.$tag.irq1_before" "$(irq1)"
dmesg | grep -E 'i8042|serio|input:' | sed 's/^/guest-dmesg: /'
cat > /tmp/kestrel-on-sigint.sh <<EOF
echo "KESTREL-VALUE guest.$tag.irq1_at_sigint \$(awk '/ i8042\$/ { print \$2 }' /proc/interrupts)"
EOF
echo "KESTREL-CAD-READY"
