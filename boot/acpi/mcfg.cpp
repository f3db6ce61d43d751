#include "boot/acpi/mcfg.hpp"

namespace kestrel::acpi {

Result<std::vector<uint8_t>> build_mcfg(const PciHostConfig& pci) {
    std::vector<uint8_t> out;
    append_struct(out, McfgFixed{make_header("MCFG", kMcfgRevision), 0});
    append_struct(out, McfgAllocation{pci.ecam_base, 0, pci.bus_start, pci.bus_end, 0});
    TRY(seal_table(out));
    return out;
}

}  // namespace kestrel::acpi
