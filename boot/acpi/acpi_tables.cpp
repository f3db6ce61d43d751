#include "boot/acpi/acpi_tables.hpp"

#include "boot/acpi/dsdt.hpp"
#include "boot/acpi/fadt.hpp"
#include "boot/acpi/madt.hpp"
#include "boot/acpi/mcfg.hpp"
#include "boot/acpi/rsdp.hpp"
#include "boot/acpi/xsdt.hpp"
#include "boot/x86_layout.hpp"

namespace kestrel::acpi {
namespace {

constexpr uint64_t align_up(uint64_t v, uint64_t a) { return (v + a - 1) & ~(a - 1); }

static_assert(x86::kAcpiStart % kRsdpAlignment == 0);
// §5.2.5.1: OSPM scans 0xE0000..0xFFFFF for the RSDP.
static_assert(x86::kAcpiStart >= 0xe0000 && x86::kAcpiStart + sizeof(Rsdp) <= 0x100000);

// Placement order. The XSDT lists every table but the FADT's DSDT. The MCFG, present only with
// PCI, comes last so a VM without PCI gets the same layout as before it existed.
enum Slot : size_t { kRsdpSlot, kXsdtSlot, kFadtSlot, kMadtSlot, kDsdtSlot, kMcfgSlot };

constexpr uint64_t k4GiB = uint64_t{1} << 32;
constexpr uint64_t kEcamBusSize = uint64_t{1} << 20;  // PCIe Base 6.0 §7.2.2: 1 MiB per bus
// The 4 KiB IOAPIC and local APIC register pages, which no PCI window may cover.
constexpr uint64_t kApicPagesStart = x86::kIoapicAddr;
constexpr uint64_t kApicPagesEnd = x86::kLapicAddr + 0x1000;

// Half-open ranges [a, a_end) and [b, b_end).
constexpr bool overlaps(uint64_t a, uint64_t a_end, uint64_t b, uint64_t b_end) {
    return a < b_end && b < a_end;
}

Result<void> validate_pci(const PciHostConfig& pci) {
    if (pci.bus_start > pci.bus_end)
        return fail("PCI: bus range {}..{} is empty", pci.bus_start, pci.bus_end);
    if (pci.ecam_base % kEcamBusSize != 0)
        return fail("PCI: ECAM base {:#x} is not 1 MiB aligned", pci.ecam_base);
    // Memory32Fixed in \_SB.ECAM and the DWordMemory window both need 32-bit addresses.
    const uint64_t ecam_end_bus = uint64_t{pci.bus_end} + 1;
    if (pci.ecam_base > k4GiB || ecam_end_bus * kEcamBusSize > k4GiB - pci.ecam_base)
        return fail("PCI: ECAM for buses {}..{} at {:#x} does not end below 4 GiB", pci.bus_start,
                    pci.bus_end, pci.ecam_base);
    const uint64_t ecam_start = pci.ecam_base + pci.bus_start * kEcamBusSize;
    const uint64_t ecam_end = pci.ecam_base + ecam_end_bus * kEcamBusSize;
    if (pci.mmio32_size == 0) return fail("PCI: the 32-bit MMIO window is empty");
    if (pci.mmio32_base > k4GiB || pci.mmio32_size > k4GiB - pci.mmio32_base)
        return fail("PCI: 32-bit MMIO window [{:#x}, +{:#x}) does not end below 4 GiB",
                    pci.mmio32_base, pci.mmio32_size);
    const uint64_t mmio32_end = pci.mmio32_base + pci.mmio32_size;
    if (overlaps(pci.mmio32_base, mmio32_end, ecam_start, ecam_end))
        return fail("PCI: 32-bit MMIO window [{:#x}, {:#x}) overlaps ECAM [{:#x}, {:#x})",
                    pci.mmio32_base, mmio32_end, ecam_start, ecam_end);
    if (overlaps(pci.mmio32_base, mmio32_end, kApicPagesStart, kApicPagesEnd) ||
        overlaps(ecam_start, ecam_end, kApicPagesStart, kApicPagesEnd))
        return fail("PCI: ECAM or the 32-bit MMIO window covers the IOAPIC/local APIC pages");
    return {};
}

}  // namespace

Result<void> validate(const AcpiConfig& cfg) {
    if (cfg.num_cpus < 1 || cfg.num_cpus > kMaxCpus)
        return fail("ACPI: num_cpus {} is outside 1..{}", cfg.num_cpus, kMaxCpus);
    if (cfg.pci) TRY(validate_pci(*cfg.pci));
    return {};
}

std::vector<uint64_t> acpi_table_addresses(uint64_t base, const std::vector<AcpiBlob>& blobs) {
    std::vector<uint64_t> addrs;
    uint64_t next = base;
    for (const auto& [name, bytes] : blobs) {
        addrs.push_back(next);
        next = align_up(next + bytes.size(), kAcpiTableAlign);
    }
    addrs.push_back(blobs.empty() ? base : addrs.back() + blobs.back().second.size());
    return addrs;
}

Result<std::vector<AcpiBlob>> try_build_acpi_tables(const AcpiConfig& cfg, uint64_t base) {
    TRY(validate(cfg));
    if (base % kRsdpAlignment != 0) return fail("ACPI base {:#x} is not 16-byte aligned", base);

    // Tables whose contents hold no addresses are built first; their sizes fix the layout,
    // then the pointer tables are built against it. Sizes of the pointer tables are fixed.
    const size_t xsdt_entry_count = cfg.pci ? 3 : 2;
    std::vector<AcpiBlob> blobs(cfg.pci ? kMcfgSlot + 1 : kMcfgSlot);
    blobs[kRsdpSlot] = {"RSDP", std::vector<uint8_t>(sizeof(Rsdp))};
    blobs[kXsdtSlot] = {"XSDT", std::vector<uint8_t>(xsdt_size(xsdt_entry_count))};
    blobs[kFadtSlot] = {"FACP", std::vector<uint8_t>(sizeof(Fadt))};
    blobs[kMadtSlot] = {"APIC", TRY(build_madt(cfg.num_cpus, cfg.has_8259))};
    blobs[kDsdtSlot] = {"DSDT", TRY(build_dsdt(cfg))};
    if (cfg.pci) blobs[kMcfgSlot] = {"MCFG", TRY(build_mcfg(*cfg.pci))};
    const std::vector<uint64_t> at = acpi_table_addresses(base, blobs);

    std::vector<uint64_t> xsdt_entries = {at[kFadtSlot], at[kMadtSlot]};
    if (cfg.pci) xsdt_entries.push_back(at[kMcfgSlot]);
    blobs[kXsdtSlot].second = TRY(build_xsdt(xsdt_entries));
    blobs[kFadtSlot].second = TRY(build_fadt(at[kDsdtSlot]));
    blobs[kRsdpSlot].second = build_rsdp(at[kXsdtSlot]);
    // The placeholders must have had the final sizes, or the addresses above are wrong.
    if (acpi_table_addresses(base, blobs) != at) return fail("ACPI layout changed while building");
    return blobs;
}

std::vector<AcpiBlob> build_acpi_tables(const AcpiConfig& cfg, uint64_t base) {
    auto blobs = try_build_acpi_tables(cfg, base);
    if (!blobs) return {};
    return std::move(*blobs);
}

Result<GuestAddress> write_acpi_tables(GuestMemory& mem, const AcpiConfig& cfg) {
    const std::vector<AcpiBlob> blobs = TRY(try_build_acpi_tables(cfg, x86::kAcpiStart));
    const std::vector<uint64_t> at = acpi_table_addresses(x86::kAcpiStart, blobs);
    if (at.back() > x86::kAcpiEnd)
        return fail("ACPI tables for {} vCPUs need {:#x} bytes, more than the {:#x}-byte window",
                    cfg.num_cpus, at.back() - x86::kAcpiStart, x86::kAcpiEnd - x86::kAcpiStart);

    auto zeroed = mem.fill(GuestAddress(x86::kAcpiStart), x86::kAcpiEnd - x86::kAcpiStart, 0);
    if (!zeroed) return std::unexpected(context(zeroed.error(), "ACPI window"));
    for (size_t i = 0; i < blobs.size(); ++i) {
        auto written = mem.write(GuestAddress(at[i]), blobs[i].second);
        if (!written) return std::unexpected(context(written.error(), "writing ACPI " + blobs[i].first));
    }
    return GuestAddress(at[kRsdpSlot]);
}

}  // namespace kestrel::acpi
