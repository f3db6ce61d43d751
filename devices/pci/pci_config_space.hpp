// PciConfigSpace: the bytes of one function's type 0 configuration header (PCI Local Bus
// 3.0 §6.1, §6.2) plus a per-byte writable mask, so guest writes to read-only bits are
// dropped. Memory BARs are sized the way PCI 3.0 §6.2.5.1 describes: the address bits below
// the BAR's size are not writable, so writing all ones reads back the size mask. Capabilities
// (PCI 3.0 §6.7) are chained from the pointer at 0x34 in the order they are added.
// Not thread-safe: the owning PciDevice guards it.
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <vector>

#include "devices/pci/pci_device.hpp"
#include "vmm/base/error.hpp"

namespace kestrel {

// Type 0 header registers (PCI 3.0 §6.1, figure 6-1).
namespace pci_reg {
inline constexpr uint16_t kVendorId = 0x00;
inline constexpr uint16_t kDeviceId = 0x02;
inline constexpr uint16_t kCommand = 0x04;
inline constexpr uint16_t kStatus = 0x06;
inline constexpr uint16_t kRevisionId = 0x08;
inline constexpr uint16_t kClassCode = 0x09;  // prog-if 0x09, subclass 0x0a, base class 0x0b
inline constexpr uint16_t kCacheLineSize = 0x0c;
inline constexpr uint16_t kHeaderType = 0x0e;
inline constexpr uint16_t kBar0 = 0x10;
inline constexpr uint16_t kSubsystemVendorId = 0x2c;
inline constexpr uint16_t kSubsystemId = 0x2e;
inline constexpr uint16_t kExpansionRom = 0x30;
inline constexpr uint16_t kCapabilitiesPointer = 0x34;
inline constexpr uint16_t kInterruptLine = 0x3c;
inline constexpr uint16_t kInterruptPin = 0x3d;
inline constexpr uint16_t kFirstCapability = 0x40;  // capabilities live in [0x40, 0x100)
inline constexpr uint16_t kLegacyEnd = 0x100;

// Command register bits (PCI 3.0 §6.2.2).
inline constexpr uint16_t kCommandMemorySpace = 1 << 1;
inline constexpr uint16_t kCommandBusMaster = 1 << 2;
inline constexpr uint16_t kCommandIntxDisable = 1 << 10;
// Status register bit 4: a capabilities list is present (PCI 3.0 §6.2.3).
inline constexpr uint16_t kStatusCapabilitiesList = 1 << 4;

// BAR low bits (PCI 3.0 §6.2.5.1).
inline constexpr uint32_t kBarMemType64 = 0x2 << 1;
inline constexpr uint32_t kBarPrefetchable = 1 << 3;
inline constexpr uint32_t kBarMemFlagsMask = 0xf;
}  // namespace pci_reg

struct PciIdentity {
    uint16_t vendor_id = 0;
    uint16_t device_id = 0;
    uint8_t revision_id = 0;
    uint8_t base_class = 0;  // PCI Code and ID Assignment spec §1
    uint8_t subclass = 0;
    uint8_t prog_if = 0;
    uint16_t subsystem_vendor_id = 0;
    uint16_t subsystem_id = 0;
};

class PciConfigSpace {
public:
    // 4 KiB as ECAM addresses it; a conventional PCI function leaves [0x100, 0x1000) zero.
    static constexpr uint16_t kSize = 4096;

    explicit PciConfigSpace(const PciIdentity& id);

    // Any offset/length: bytes past the end read as 0xff and are not written.
    void read(uint16_t offset, std::span<uint8_t> data) const;
    // A guest write: only bits set in the writable mask change.
    void write(uint16_t offset, std::span<const uint8_t> data);

    // Declares a memory BAR; fails on a bad size, index or an already used register.
    Result<void> add_memory_bar(const PciBarSpec& bar);
    const std::vector<PciBarSpec>& bars() const { return bars_; }
    // The base address the BAR register holds now (flag bits masked off), decoding or not.
    uint64_t bar_address(uint8_t index) const;
    // Sets the BAR register as firmware would (ignores the writable mask).
    void set_bar_address(uint8_t index, uint64_t address);
    bool memory_enabled() const;

    // Appends a capability: `body` is everything after the ID and next-pointer bytes and
    // `body_writable` its writable mask (same length, or empty = read-only). Returns the
    // capability's offset in config space.
    Result<uint16_t> add_capability(uint8_t id, std::span<const uint8_t> body,
                                    std::span<const uint8_t> body_writable = {});

    // Device-side access (not masked), little-endian; offsets must be in range.
    uint8_t u8(uint16_t offset) const { return bytes_[offset]; }
    uint16_t u16(uint16_t offset) const;
    uint32_t u32(uint16_t offset) const;
    void set_u8(uint16_t offset, uint8_t v) { bytes_[offset] = v; }
    void set_u16(uint16_t offset, uint16_t v);
    void set_u32(uint16_t offset, uint32_t v);
    void set_writable_mask(uint16_t offset, std::span<const uint8_t> mask);

    // Snapshots: the whole image, and putting a saved one back. Refused (nothing changes)
    // when a byte differs from this function's in a bit the guest cannot write: the image is
    // of another device, capability layout or kestrel version, or corrupt.
    const std::array<uint8_t, kSize>& image() const { return bytes_; }
    Result<void> restore(std::span<const uint8_t> image);

private:
    const PciBarSpec* bar_at(uint8_t index) const;

    std::array<uint8_t, kSize> bytes_{};
    std::array<uint8_t, kSize> writable_{};
    std::vector<PciBarSpec> bars_;
    uint16_t next_capability_ = pci_reg::kFirstCapability;
    uint16_t last_capability_ = 0;  // 0 = none yet
};

}  // namespace kestrel
