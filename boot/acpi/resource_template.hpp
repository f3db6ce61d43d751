// ACPI resource descriptors (ACPI 6.5 §6.4, "Resource Data Types for ACPI") and the ASL
// ResourceTemplate() that wraps them in an AML Buffer, for _CRS objects. Only the small
// descriptors the DSDT uses, and the large ones a PCI host bridge's _CRS needs.
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

// §6.4.3.4 32-Bit Fixed Memory Range Descriptor: ASL Memory32Fixed(ReadWrite|ReadOnly, base,
// length). Fails if the range would pass 4 GiB.
Result<Bytes> memory32_fixed(bool read_write, uint32_t base, uint32_t length);

// §6.4.3.5 Address Space Descriptors, in the one shape a PCI host bridge window takes: a
// ResourceProducer (general flags bit 0 clear), positive decode, fixed size at a fixed place
// (_MIF = _MAF = 1), which by §6.4.3.5's "Valid Combination of Address Space Descriptor
// Fields" means _GRA = 0 and _LEN = _MAX - _MIN + 1; no translation, no ResourceSource.
// Each fails if max < min.
//
// §6.4.3.5.3 Word Address Space Descriptor, resource type 2 (bus number range):
// ASL WordBusNumber(ResourceProducer, MinFixed, MaxFixed, PosDecode, 0, min, max, 0, len).
Result<Bytes> word_bus_number(uint16_t min, uint16_t max);
// §6.4.3.5.3, resource type 1 (I/O), §6.4.3.5.5 I/O flag _RNG = 3 (EntireRange), TypeStatic,
// DenseTranslation: ASL WordIO(ResourceProducer, MinFixed, MaxFixed, PosDecode, EntireRange,
// 0, min, max, 0, len).
Result<Bytes> word_io(uint16_t min, uint16_t max);

// §6.4.3.5.5 Resource Type Specific Flags, memory resource flag _MEM.
enum class MemoryCaching : uint8_t {
    kNonCacheable = 0,
    kCacheable = 1,
    kWriteCombining = 2,
    kPrefetchable = 3,
};
// §6.4.3.5.2 DWord Address Space Descriptor, resource type 0 (memory), AddressRangeMemory,
// TypeStatic: ASL DWordMemory(ResourceProducer, PosDecode, MinFixed, MaxFixed, caching,
// ReadWrite|ReadOnly, 0, min, max, 0, len).
Result<Bytes> dword_memory(MemoryCaching caching, bool read_write, uint32_t min, uint32_t max);

// ASL ResourceTemplate(): a Buffer holding the descriptors followed by the End Tag (§6.4.2.9).
Result<Bytes> resource_template(std::span<const Bytes> descriptors);

}  // namespace kestrel::acpi::aml
