#!/bin/sh
# --pit: KVM's in-kernel PIC + IOAPIC + i8254 PIT instead of the split irqchip. The vmlinux
# guest with 2 vCPUs boots as in boot-vmlinux, its console interrupt is the in-kernel IOAPIC's
# pin 4, and virtio MSI-X (virtio-rng) works through GSI routes next to the irqchip's pins.
#@ timeout 300
#@ expect-rc 0
#@ expect-guest cpus=2
#@ expect-guest-range memtotal_kb 400000 524288
#@ expect-cmdline
#@ guest-modules virtio_pci virtio-rng
#@ expect-line ^KESTREL-GUEST-CASE-END pit rc=0$
#@ expect-value guest.ttyS0.pin == IO-APIC 4-edge
#@ expect-value guest.ttyS0.count >= 1
#@ expect-value guest.rng_current =~ virtio_rng(\.\d+)?
#@ expect-value guest.rng.bytes == 1024
. /nested/case-lib.sh
boot_guest --timeout 280 --append "kestrel.case=pit" \
  --kernel "$L2/vmlinux" --initrd "$L2/initrd.cpio.gz" --cpus 2 --memory 512M --pit --rng
