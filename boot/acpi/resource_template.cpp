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

// §6.4.3 large resource data type: tag byte with bit 7 set and the item name in bits 6:0, then
// the 16-bit length of the data that follows the 3-byte header.
constexpr uint8_t kFixedMemory32Item = 0x06;      // §6.4.3.4
constexpr uint8_t kDWordAddressSpaceItem = 0x07;  // §6.4.3.5.2
constexpr uint8_t kWordAddressSpaceItem = 0x08;   // §6.4.3.5.3

// §6.4.3.5.1-3, byte 3 Resource Type.
constexpr uint8_t kResourceTypeMemory = 0;
constexpr uint8_t kResourceTypeIo = 1;
constexpr uint8_t kResourceTypeBusNumber = 2;
// byte 4 General Flags: bit 3 _MAF, bit 2 _MIF, bit 1 _DEC (0 = positive decode), bit 0 clear
// = ResourceProducer (a bridge window that hands addresses to the devices below it).
constexpr uint8_t kFixedWindowProducer = (1u << 3) | (1u << 2);
// §6.4.3.5.5 I/O resource flags: _RNG (bits 1:0) = 3, both ISA and non-ISA ranges.
constexpr uint8_t kIoRangeEntire = 0x3;

void append_le(Bytes& out, uint64_t v, unsigned bytes) {
    for (unsigned i = 0; i < bytes; ++i) out.push_back(static_cast<uint8_t>(v >> (8 * i)));
}

Bytes large_header(uint8_t item, uint16_t length) {
    return {static_cast<uint8_t>(0x80 | item), static_cast<uint8_t>(length),
            static_cast<uint8_t>(length >> 8)};
}

// The Word (width 2), DWord (4) or QWord (8) layout of §6.4.3.5.1-3: type, general flags,
// type-specific flags, then _GRA, _MIN, _MAX, _TRA, _LEN of `width` bytes each.
Result<Bytes> address_space(uint8_t item, unsigned width, uint8_t resource_type,
                            uint8_t type_flags, uint64_t min, uint64_t max) {
    if (max < min) return fail("ACPI address space window [{:#x}, {:#x}] is empty", min, max);
    const uint64_t length = max - min + 1;
    // A full-width window's length does not fit in its own _LEN field.
    if (width < 8 && length >> (8 * width) != 0)
        return fail("ACPI address space window [{:#x}, {:#x}] is too long", min, max);
    if (length == 0) return fail("ACPI address space window covers all 64 bits");
    Bytes out = large_header(item, static_cast<uint16_t>(3 + 5 * width));
    out.push_back(resource_type);
    out.push_back(kFixedWindowProducer);
    out.push_back(type_flags);
    append_le(out, 0, width);  // _GRA: must be 0 for a fixed-size, fixed-location window
    append_le(out, min, width);
    append_le(out, max, width);
    append_le(out, 0, width);  // _TRA: no translation, CPU and PCI addresses are equal
    append_le(out, length, width);
    return out;
}

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

Result<Bytes> memory32_fixed(bool read_write, uint32_t base, uint32_t length) {
    if (length != 0 && uint64_t{base} + length - 1 > 0xffff'ffff)
        return fail("Memory32Fixed [{:#x}, +{:#x}) passes 4 GiB", base, length);
    Bytes out = large_header(kFixedMemory32Item, 9);
    out.push_back(read_write ? 1 : 0);  // §6.4.3.4 byte 3 bit 0: _RW
    append_le(out, base, 4);
    append_le(out, length, 4);
    return out;
}

Result<Bytes> word_bus_number(uint16_t min, uint16_t max) {
    return address_space(kWordAddressSpaceItem, 2, kResourceTypeBusNumber, 0, min, max);
}

Result<Bytes> word_io(uint16_t min, uint16_t max) {
    return address_space(kWordAddressSpaceItem, 2, kResourceTypeIo, kIoRangeEntire, min, max);
}

Result<Bytes> dword_memory(MemoryCaching caching, bool read_write, uint32_t min, uint32_t max) {
    // §6.4.3.5.5 memory resource flags: bit 0 _RW, bits 2:1 _MEM, bits 4:3 _MTP = 0
    // (AddressRangeMemory), bit 5 _TTP = 0 (TypeStatic).
    const auto flags =
        static_cast<uint8_t>((static_cast<uint8_t>(caching) << 1) | (read_write ? 1 : 0));
    return address_space(kDWordAddressSpaceItem, 4, kResourceTypeMemory, flags, min, max);
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
