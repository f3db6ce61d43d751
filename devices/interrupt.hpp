// Interrupt objects handed to devices, so devices never see KVM. The VMM layer implements
// them (KVM_IRQ_LINE on the in-kernel IOAPIC/PIC, later irqfd/MSI routes).
#pragma once

#include <cstdint>

namespace kestrel {

// A level-sensitive wire into the interrupt controller (an ISA IRQ / IOAPIC pin).
// Edge-triggered pins see a rising edge when the level goes from false to true.
class InterruptLine {
public:
    virtual ~InterruptLine() = default;
    virtual void set_level(bool asserted) = 0;
};

}  // namespace kestrel
