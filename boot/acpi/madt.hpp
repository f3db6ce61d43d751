// Multiple APIC Description Table (ACPI 6.5 §5.2.12): one local APIC per vCPU, the IOAPIC and
// the ISA IRQ0 -> GSI 2 override that matches KVM's in-kernel IOAPIC wiring.
#pragma once

#include <cstdint>
#include <vector>

#include "boot/acpi/sdt.hpp"
#include "vmm/base/error.hpp"

namespace kestrel::acpi {

// §5.2.12 MADT format.
struct [[gnu::packed]] MadtFixed {
    SdtHeader header;             // 0: "APIC"
    uint32_t local_apic_address;  // 36
    uint32_t flags;               // 40: Multiple APIC Flags
};
static_assert(sizeof(MadtFixed) == 44);

inline constexpr uint32_t kMadtPcatCompat = 1u << 0;

// §5.2.12 Interrupt Controller Structure Types.
enum class MadtType : uint8_t {
    kLocalApic = 0,
    kIoApic = 1,
    kInterruptSourceOverride = 2,
    kLocalApicNmi = 4,
};

// §5.2.12.2 Processor Local APIC Structure.
struct [[gnu::packed]] MadtLocalApic {
    MadtType type;                // 0
    uint8_t length;               // 1: 8
    uint8_t acpi_processor_uid;   // 2
    uint8_t apic_id;              // 3
    uint32_t flags;               // 4: Local APIC Flags
};
static_assert(sizeof(MadtLocalApic) == 8);

inline constexpr uint32_t kLocalApicEnabled = 1u << 0;

// §5.2.12.3 I/O APIC Structure.
struct [[gnu::packed]] MadtIoApic {
    MadtType type;                     // 0
    uint8_t length;                    // 1: 12
    uint8_t io_apic_id;                // 2
    uint8_t reserved;                  // 3
    uint32_t io_apic_address;          // 4
    uint32_t global_system_interrupt_base;  // 8
};
static_assert(sizeof(MadtIoApic) == 12);

// §5.2.12.5 Interrupt Source Override Structure.
struct [[gnu::packed]] MadtInterruptSourceOverride {
    MadtType type;                     // 0
    uint8_t length;                    // 1: 10
    uint8_t bus;                       // 2: 0 = ISA
    uint8_t source;                    // 3: ISA IRQ
    uint32_t global_system_interrupt;  // 4
    uint16_t flags;                    // 8: MPS INTI flags (§5.2.12.5)
};
static_assert(sizeof(MadtInterruptSourceOverride) == 10);

// §5.2.12.7 Local APIC NMI Structure.
struct [[gnu::packed]] MadtLocalApicNmi {
    MadtType type;                // 0
    uint8_t length;               // 1: 6
    uint8_t acpi_processor_uid;   // 2: 0xFF = all processors
    uint16_t flags;               // 3: MPS INTI flags
    uint8_t local_apic_lint;      // 5
};
static_assert(sizeof(MadtLocalApicNmi) == 6);

inline constexpr uint16_t kMpsIntiConforms = 0;  // polarity and trigger conform to the bus
inline constexpr uint8_t kMadtRevision = 5;

// xAPIC ids are 8 bits and 0xFF is the broadcast id, so at most 254 vCPUs plus the IOAPIC.
inline constexpr uint32_t kMaxCpus = 254;

// APIC ids and ACPI processor UIDs 0..num_cpus-1; IOAPIC id num_cpus. Fails outside 1..kMaxCpus.
Result<std::vector<uint8_t>> build_madt(uint32_t num_cpus, bool has_8259);

}  // namespace kestrel::acpi
