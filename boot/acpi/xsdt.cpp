#include "boot/acpi/xsdt.hpp"

#include "boot/acpi/sdt.hpp"

namespace kestrel::acpi {

Result<std::vector<uint8_t>> build_xsdt(std::span<const uint64_t> table_addresses) {
    std::vector<uint8_t> out;
    append_struct(out, make_header("XSDT", kXsdtRevision));
    for (uint64_t a : table_addresses) append_struct(out, a);
    TRY(seal_table(out));
    return out;
}

}  // namespace kestrel::acpi
