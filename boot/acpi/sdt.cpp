#include "boot/acpi/sdt.hpp"

#include <algorithm>
#include <cstddef>
#include <limits>

namespace kestrel::acpi {

uint8_t checksum_of(std::span<const uint8_t> bytes) {
    uint8_t sum = 0;
    for (uint8_t b : bytes) sum = static_cast<uint8_t>(sum + b);
    return static_cast<uint8_t>(-sum);
}

SdtHeader make_header(std::string_view signature, uint8_t revision) {
    SdtHeader h{};
    std::memcpy(h.signature, signature.data(), std::min(signature.size(), sizeof h.signature));
    h.revision = revision;
    std::memcpy(h.oem_id, kOemId.data(), sizeof h.oem_id);
    std::memcpy(h.oem_table_id, kOemTableId.data(), sizeof h.oem_table_id);
    h.oem_revision = kOemRevision;
    std::memcpy(h.creator_id, kCreatorId.data(), sizeof h.creator_id);
    h.creator_revision = kCreatorRevision;
    return h;
}

Result<void> seal_table(std::span<uint8_t> table) {
    if (table.size() < sizeof(SdtHeader)) return fail("ACPI table shorter than its header");
    if (table.size() > std::numeric_limits<uint32_t>::max())
        return fail("ACPI table of {} bytes does not fit its 32-bit length", table.size());
    const auto length = static_cast<uint32_t>(table.size());
    std::memcpy(table.data() + offsetof(SdtHeader, length), &length, sizeof length);
    table[offsetof(SdtHeader, checksum)] = 0;
    table[offsetof(SdtHeader, checksum)] = checksum_of(table);
    return {};
}

}  // namespace kestrel::acpi
