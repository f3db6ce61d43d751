// What kestrel hands the guest kernel as its command line: the configured one, minus the one
// parameter that cannot work on kestrel's machine.
//
// `i8042.nopnp` (in the boot arguments Firecracker users pass: i8042.noaux i8042.nomux
// i8042.nopnp i8042.dumbkbd) makes Linux's i8042 driver skip ACPI and request the legacy
// IRQ number 1 (i8042-acpipnpio.h: I8042_MAP_IRQ(1)). Under kestrel's hardware-reduced ACPI
// Linux has no legacy PIC and so no legacy IRQ numbers (null_legacy_pic: nr_legacy_irqs() 0;
// the IOAPIC's IRQ domain is dynamic), and irq 1 does not exist: the probe fails with -EINVAL
// and there is no keyboard, so no SendCtrlAltDel. Without it the driver finds the controller
// as \_SB.KBD (PNP0303) with its GSI 1 mapped to whatever IRQ number Linux picks. The
// parameter only ever helped on machines without such a description, so it is dropped (and
// logged); every other word is passed unchanged.
#pragma once

#include <string>
#include <string_view>

namespace kestrel {

struct GuestCmdline {
    std::string text;      // what the guest gets
    bool dropped_nopnp = false;
};

// Kernel parameters end at a lone "--" (what follows is init's) and may hold double-quoted
// spaces (Linux's next_arg); only an unquoted `i8042.nopnp`, alone or set true (=1, =y, =Y,
// =on), among the kernel's own parameters is removed.
GuestCmdline guest_cmdline(std::string_view configured);

}  // namespace kestrel
