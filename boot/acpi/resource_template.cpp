#include "boot/acpi/resource_template.hpp"

namespace kestrel::acpi::aml {
namespace {

// §6.4.2 small resource data type tag byte: bit 7 = 0, bits 6:3 item name, bits 2:0 length of
// the data that follows the tag byte.
constexpr uint8_t small_tag(uint8_t item, uint8_t length) {
    return static_cast<uint8_t>((item << 3) | length);
}
constexpr uint8_t kIrqItem = 0x4;
constexpr uint8_t kIoPortItem = 0x8;
constexpr uint8_t kEndTagItem = 0xf;
constexpr uint8_t kIoDecode16 = 0x01;  // §6.4.2.5 byte 1 bit 0: full 16-bit address decode

}  // namespace

Bytes io_port_decode16(uint16_t min, uint16_t max, uint8_t alignment, uint8_t length) {
    return {small_tag(kIoPortItem, 7),
            kIoDecode16,
            static_cast<uint8_t>(min),
            static_cast<uint8_t>(min >> 8),
            static_cast<uint8_t>(max),
            static_cast<uint8_t>(max >> 8),
            alignment,
            length};
}

Bytes irq_no_flags(uint16_t mask) {
    return {small_tag(kIrqItem, 2), static_cast<uint8_t>(mask), static_cast<uint8_t>(mask >> 8)};
}

Result<Bytes> resource_template(std::span<const Bytes> descriptors) {
    Bytes data;
    for (const Bytes& d : descriptors) data.insert(data.end(), d.begin(), d.end());
    // §6.4.2.9: a zero checksum byte means "treat the checksum as valid", as iasl emits.
    data.push_back(small_tag(kEndTagItem, 1));
    data.push_back(0);
    return buffer(data);
}

}  // namespace kestrel::acpi::aml
