#!/bin/sh
# Guest half of console-input: the 8250 driver receives typed text through kestrel's UART,
# its receive interrupt coming through kestrel's userspace IOAPIC. Raw mode, so every byte
# arrives as sent; L1 sends only after the READY line, as a user would type at a prompt.
. /etc/kestrel/guest-lib.sh
GUEST_DMESG='ttyS0|serial'
before=$(grep -m1 ' ttyS0$' /proc/interrupts | awk '{ n = 0; for (i = 2; i <= NF - 3; i++) n += $i; print n }')
stty raw -echo < /dev/console || fail "stty raw on /dev/console failed"
echo "KESTREL-GUEST-CONSOLE-READY"
head -c 6000 < /dev/console > /tmp/typed || fail "reading /dev/console failed"
stty sane < /dev/console
after=$(grep -m1 ' ttyS0$' /proc/interrupts | awk '{ n = 0; for (i = 2; i <= NF - 3; i++) n += $i; print n }')
value guest.console.bytes "$(stat -c %s /tmp/typed)"
value guest.console.sha256 "$(sha256 /tmp/typed)"
value guest.ttyS0.rx_irqs "$(( after - before ))"
