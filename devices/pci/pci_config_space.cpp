#include "devices/pci/pci_config_space.hpp"

#include <algorithm>

namespace kestrel {

namespace {
constexpr uint8_t kHeaderTypeNormal = 0x00;  // type 0, single function (PCI 3.0 §6.2.1)
}

PciConfigSpace::PciConfigSpace(const PciIdentity& id) {
    using namespace pci_reg;
    set_u16(kVendorId, id.vendor_id);
    set_u16(kDeviceId, id.device_id);
    set_u8(kRevisionId, id.revision_id);
    set_u8(kClassCode, id.prog_if);
    set_u8(kClassCode + 1, id.subclass);
    set_u8(kClassCode + 2, id.base_class);
    set_u8(kHeaderType, kHeaderTypeNormal);
    set_u16(kSubsystemVendorId, id.subsystem_vendor_id);
    set_u16(kSubsystemId, id.subsystem_id);
    // No INTx: interrupt pin 0 (PCI 3.0 §6.2.4); the line register stays a scratch byte
    // the OS may write.
    set_u8(kInterruptPin, 0);

    // Writable bits: the command bits a memory-only bus master implements (§6.2.2), cache
    // line size and interrupt line (both plain storage for software, §6.2.4).
    uint16_t command = kCommandMemorySpace | kCommandBusMaster | kCommandIntxDisable;
    writable_[kCommand] = static_cast<uint8_t>(command);
    writable_[kCommand + 1] = static_cast<uint8_t>(command >> 8);
    writable_[kCacheLineSize] = 0xff;
    writable_[kInterruptLine] = 0xff;
}

void PciConfigSpace::read(uint16_t offset, std::span<uint8_t> data) const {
    for (size_t i = 0; i < data.size(); ++i) {
        size_t at = size_t{offset} + i;
        data[i] = at < kSize ? bytes_[at] : 0xff;
    }
}

void PciConfigSpace::write(uint16_t offset, std::span<const uint8_t> data) {
    for (size_t i = 0; i < data.size(); ++i) {
        size_t at = size_t{offset} + i;
        if (at >= kSize) break;
        uint8_t w = writable_[at];
        bytes_[at] = static_cast<uint8_t>((bytes_[at] & ~w) | (data[i] & w));
    }
}

uint16_t PciConfigSpace::u16(uint16_t offset) const {
    return static_cast<uint16_t>(bytes_[offset] | bytes_[offset + 1] << 8);
}

uint32_t PciConfigSpace::u32(uint16_t offset) const {
    return uint32_t{u16(offset)} | uint32_t{u16(static_cast<uint16_t>(offset + 2))} << 16;
}

void PciConfigSpace::set_u16(uint16_t offset, uint16_t v) {
    bytes_[offset] = static_cast<uint8_t>(v);
    bytes_[offset + 1] = static_cast<uint8_t>(v >> 8);
}

void PciConfigSpace::set_u32(uint16_t offset, uint32_t v) {
    set_u16(offset, static_cast<uint16_t>(v));
    set_u16(static_cast<uint16_t>(offset + 2), static_cast<uint16_t>(v >> 16));
}

Result<void> PciConfigSpace::restore(std::span<const uint8_t> image) {
    if (image.size() != kSize) return fail("PCI config space: {} bytes, expected {}", image.size(), kSize);
    for (size_t i = 0; i < kSize; ++i)
        if ((image[i] ^ bytes_[i]) & ~writable_[i])
            return fail("PCI config space: byte {:#x} is {:#04x}, this function's is {:#04x} (read-only bits differ)",
                        i, image[i], bytes_[i]);
    std::copy(image.begin(), image.end(), bytes_.begin());
    return {};
}

void PciConfigSpace::set_writable_mask(uint16_t offset, std::span<const uint8_t> mask) {
    for (size_t i = 0; i < mask.size() && size_t{offset} + i < kSize; ++i)
        writable_[offset + i] = mask[i];
}

const PciBarSpec* PciConfigSpace::bar_at(uint8_t index) const {
    for (auto& b : bars_)
        if (b.index == index) return &b;
    return nullptr;
}

Result<void> PciConfigSpace::add_memory_bar(const PciBarSpec& bar) {
    // PCI 3.0 §6.2.5.1: memory BARs claim at least 16 bytes and a power of two.
    if (bar.size < 16 || (bar.size & (bar.size - 1)) != 0)
        return fail("pci: BAR{} size {:#x} is not a power of two >= 16", bar.index, bar.size);
    if (!bar.is_64bit && bar.size > (uint64_t{1} << 31))
        return fail("pci: 32-bit BAR{} size {:#x} too large", bar.index, bar.size);
    unsigned last = bar.index + (bar.is_64bit ? 1u : 0u);
    if (last > 5) return fail("pci: BAR{} out of range", bar.index);
    for (auto& b : bars_) {
        unsigned b_last = b.index + (b.is_64bit ? 1u : 0u);
        if (bar.index <= b_last && b.index <= last)
            return fail("pci: BAR{} overlaps BAR{}", bar.index, b.index);
    }

    uint16_t reg = static_cast<uint16_t>(pci_reg::kBar0 + 4 * bar.index);
    uint32_t flags = (bar.is_64bit ? pci_reg::kBarMemType64 : 0) |
                     (bar.prefetchable ? pci_reg::kBarPrefetchable : 0);
    uint64_t address_mask = ~(bar.size - 1);
    set_u32(reg, flags);
    uint32_t lo_mask = static_cast<uint32_t>(address_mask) & ~pci_reg::kBarMemFlagsMask;
    std::array<uint8_t, 4> m{static_cast<uint8_t>(lo_mask), static_cast<uint8_t>(lo_mask >> 8),
                             static_cast<uint8_t>(lo_mask >> 16), static_cast<uint8_t>(lo_mask >> 24)};
    set_writable_mask(reg, m);
    if (bar.is_64bit) {
        auto hi_mask = static_cast<uint32_t>(address_mask >> 32);
        set_u32(static_cast<uint16_t>(reg + 4), 0);
        m = {static_cast<uint8_t>(hi_mask), static_cast<uint8_t>(hi_mask >> 8),
             static_cast<uint8_t>(hi_mask >> 16), static_cast<uint8_t>(hi_mask >> 24)};
        set_writable_mask(static_cast<uint16_t>(reg + 4), m);
    }
    bars_.push_back(bar);
    return {};
}

uint64_t PciConfigSpace::bar_address(uint8_t index) const {
    const PciBarSpec* b = bar_at(index);
    if (!b) return 0;
    uint16_t reg = static_cast<uint16_t>(pci_reg::kBar0 + 4 * index);
    uint64_t addr = u32(reg) & ~pci_reg::kBarMemFlagsMask;
    if (b->is_64bit) addr |= uint64_t{u32(static_cast<uint16_t>(reg + 4))} << 32;
    return addr;
}

void PciConfigSpace::set_bar_address(uint8_t index, uint64_t address) {
    const PciBarSpec* b = bar_at(index);
    if (!b) return;
    uint16_t reg = static_cast<uint16_t>(pci_reg::kBar0 + 4 * index);
    uint32_t flags = u32(reg) & pci_reg::kBarMemFlagsMask;
    uint64_t base = address & ~(b->size - 1);
    set_u32(reg, static_cast<uint32_t>(base) | flags);
    if (b->is_64bit) set_u32(static_cast<uint16_t>(reg + 4), static_cast<uint32_t>(base >> 32));
}

bool PciConfigSpace::memory_enabled() const {
    return (u16(pci_reg::kCommand) & pci_reg::kCommandMemorySpace) != 0;
}

Result<uint16_t> PciConfigSpace::add_capability(uint8_t id, std::span<const uint8_t> body,
                                                std::span<const uint8_t> body_writable) {
    if (!body_writable.empty() && body_writable.size() != body.size())
        return fail("pci: capability {:#x} mask length differs from its body", id);
    // Capabilities are dword aligned (PCI 3.0 §6.7: the bottom two pointer bits are reserved).
    size_t len = 2 + body.size();
    size_t aligned = (len + 3) & ~size_t{3};
    uint16_t at = next_capability_;
    if (at + aligned > pci_reg::kLegacyEnd)
        return fail("pci: no room for capability {:#x} ({} bytes)", id, len);

    set_u8(at, id);
    set_u8(static_cast<uint16_t>(at + 1), 0);
    std::copy(body.begin(), body.end(), bytes_.begin() + at + 2);
    if (!body_writable.empty()) set_writable_mask(static_cast<uint16_t>(at + 2), body_writable);

    if (last_capability_ == 0) {
        set_u8(pci_reg::kCapabilitiesPointer, static_cast<uint8_t>(at));
        set_u16(pci_reg::kStatus, u16(pci_reg::kStatus) | pci_reg::kStatusCapabilitiesList);
    } else {
        set_u8(static_cast<uint16_t>(last_capability_ + 1), static_cast<uint8_t>(at));
    }
    last_capability_ = at;
    next_capability_ = static_cast<uint16_t>(at + aligned);
    return at;
}

}  // namespace kestrel
