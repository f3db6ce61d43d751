// ACPI resource descriptors (ACPI 6.5 §6.4, "Resource Data Types for ACPI") and the ASL
// ResourceTemplate() that wraps them in an AML Buffer, for _CRS objects. Only the small
// descriptors the DSDT uses.
#pragma once

#include <cstdint>
#include <span>

#include "boot/acpi/aml.hpp"
#include "vmm/base/error.hpp"

namespace kestrel::acpi::aml {

// §6.4.2.5 I/O Port Descriptor with 16-bit decode: ASL IO(Decode16, min, max, align, length).
Bytes io_port_decode16(uint16_t min, uint16_t max, uint8_t alignment, uint8_t length);

// §6.4.2.1 IRQ Descriptor, the 2-byte form without the information byte: ASL IRQNoFlags(){..}
// (implies active-high, edge-triggered, exclusive). Bit n of `mask` selects ISA IRQ n.
Bytes irq_no_flags(uint16_t mask);

// ASL ResourceTemplate(): a Buffer holding the descriptors followed by the End Tag (§6.4.2.9).
Result<Bytes> resource_template(std::span<const Bytes> descriptors);

}  // namespace kestrel::acpi::aml
