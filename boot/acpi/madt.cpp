#include "boot/acpi/madt.hpp"

#include "boot/x86_layout.hpp"

namespace kestrel::acpi {

Result<std::vector<uint8_t>> build_madt(uint32_t num_cpus, bool has_8259) {
    if (num_cpus < 1 || num_cpus > kMaxCpus)
        return fail("MADT: {} vCPUs is outside 1..{}", num_cpus, kMaxCpus);

    std::vector<uint8_t> out;
    MadtFixed fixed{};
    fixed.header = make_header("APIC", kMadtRevision);
    fixed.local_apic_address = static_cast<uint32_t>(x86::kLapicAddr);
    // PCAT_COMPAT says a dual 8259 exists and must be masked before the IOAPIC is used
    // (§5.2.12 Multiple APIC Flags). True only with KVM's in-kernel PIC (kestrel --pit); the
    // split irqchip has none. Linux ignores the PIC under HW-reduced ACPI either way.
    fixed.flags = has_8259 ? kMadtPcatCompat : 0;
    append_struct(out, fixed);

    for (uint32_t i = 0; i < num_cpus; ++i) {
        const auto id = static_cast<uint8_t>(i);
        append_struct(out, MadtLocalApic{MadtType::kLocalApic, sizeof(MadtLocalApic), id, id,
                                         kLocalApicEnabled});
    }
    append_struct(out, MadtIoApic{MadtType::kIoApic, sizeof(MadtIoApic),
                                  static_cast<uint8_t>(num_cpus), 0,
                                  static_cast<uint32_t>(x86::kIoapicAddr), 0});
    // The PIT is wired to IOAPIC pin 2 (as on PCs and in KVM), not pin 0.
    append_struct(out, MadtInterruptSourceOverride{MadtType::kInterruptSourceOverride,
                                                   sizeof(MadtInterruptSourceOverride), 0, 0,
                                                   x86::kTimerGsi, kMpsIntiConforms});
    // LINT1 of every local APIC is the NMI input, as KVM's LAPIC reset state expects.
    append_struct(out, MadtLocalApicNmi{MadtType::kLocalApicNmi, sizeof(MadtLocalApicNmi), 0xff,
                                        kMpsIntiConforms, 1});
    TRY(seal_table(out));
    return out;
}

}  // namespace kestrel::acpi
