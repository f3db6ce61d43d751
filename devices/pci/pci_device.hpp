// PciDevice: what a function on kestrel's PCI bus implements for PciRoot (config space and
// memory BARs). Offsets into config space are 0..4095 (PCIe base spec §7.2.2 ECAM; the
// first 256 bytes are PCI Local Bus 3.0 §6.1); PciRoot has already checked that an access
// is 1, 2 or 4 bytes and does not cross a dword. BAR accesses are relative to the BAR's
// start and lie inside its size. Called from vCPU threads: implementations guard state.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace kestrel {

// One memory BAR a function decodes (PCI 3.0 §6.2.5.1). I/O BARs are not supported.
struct PciBarSpec {
    uint8_t index = 0;      // BAR register number 0..5; a 64-bit BAR also uses index + 1
    uint64_t size = 0;      // power of two, >= 16 bytes
    bool is_64bit = false;
    bool prefetchable = false;
};

class PciDevice {
public:
    virtual ~PciDevice() = default;
    virtual void config_read(uint16_t offset, std::span<uint8_t> data) = 0;
    virtual void config_write(uint16_t offset, std::span<const uint8_t> data) = 0;
    // Fixed for the device's lifetime; addresses are read back from config space.
    virtual std::vector<PciBarSpec> bar_specs() const = 0;
    virtual void bar_read(uint8_t bar, uint64_t offset, std::span<uint8_t> data) = 0;
    virtual void bar_write(uint8_t bar, uint64_t offset, std::span<const uint8_t> data) = 0;
};

}  // namespace kestrel
