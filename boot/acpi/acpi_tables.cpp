#include "boot/acpi/acpi_tables.hpp"

#include "boot/acpi/dsdt.hpp"
#include "boot/acpi/fadt.hpp"
#include "boot/acpi/madt.hpp"
#include "boot/acpi/rsdp.hpp"
#include "boot/acpi/xsdt.hpp"
#include "boot/x86_layout.hpp"

namespace kestrel::acpi {
namespace {

constexpr uint64_t align_up(uint64_t v, uint64_t a) { return (v + a - 1) & ~(a - 1); }

static_assert(x86::kAcpiStart % kRsdpAlignment == 0);
// §5.2.5.1: OSPM scans 0xE0000..0xFFFFF for the RSDP.
static_assert(x86::kAcpiStart >= 0xe0000 && x86::kAcpiStart + sizeof(Rsdp) <= 0x100000);

// Placement order. The XSDT lists every table but the FADT's DSDT; an MCFG for the PCI host
// bridge would join after the MADT.
enum Slot : size_t { kRsdpSlot, kXsdtSlot, kFadtSlot, kMadtSlot, kDsdtSlot, kSlotCount };

}  // namespace

Result<void> validate(const AcpiConfig& cfg) {
    if (cfg.num_cpus < 1 || cfg.num_cpus > kMaxCpus)
        return fail("ACPI: num_cpus {} is outside 1..{}", cfg.num_cpus, kMaxCpus);
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
    std::vector<AcpiBlob> blobs(kSlotCount);
    blobs[kRsdpSlot] = {"RSDP", std::vector<uint8_t>(sizeof(Rsdp))};
    blobs[kXsdtSlot] = {"XSDT", std::vector<uint8_t>(xsdt_size(2))};
    blobs[kFadtSlot] = {"FACP", std::vector<uint8_t>(sizeof(Fadt))};
    blobs[kMadtSlot] = {"APIC", TRY(build_madt(cfg.num_cpus))};
    blobs[kDsdtSlot] = {"DSDT", TRY(build_dsdt(cfg))};
    const std::vector<uint64_t> at = acpi_table_addresses(base, blobs);

    const uint64_t xsdt_entries[] = {at[kFadtSlot], at[kMadtSlot]};
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
