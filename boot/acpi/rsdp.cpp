#include "boot/acpi/rsdp.hpp"

#include <cstddef>
#include <cstring>
#include <span>

#include "boot/acpi/sdt.hpp"

namespace kestrel::acpi {

std::vector<uint8_t> build_rsdp(uint64_t xsdt_address) {
    Rsdp r{};
    std::memcpy(r.signature, "RSD PTR ", sizeof r.signature);
    std::memcpy(r.oem_id, kOemId.data(), sizeof r.oem_id);
    r.revision = 2;
    r.length = sizeof(Rsdp);
    r.xsdt_address = xsdt_address;

    std::vector<uint8_t> out;
    append_struct(out, r);
    // The ACPI 1.0 checksum covers the bytes before `length`, the extended one everything.
    out[offsetof(Rsdp, checksum)] = checksum_of(std::span(out).first(offsetof(Rsdp, length)));
    out[offsetof(Rsdp, extended_checksum)] = checksum_of(out);
    return out;
}

}  // namespace kestrel::acpi
