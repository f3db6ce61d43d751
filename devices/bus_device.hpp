// BusDevice: what a port-I/O or MMIO device implements. Offsets are relative to the
// device's base on its bus; data.size() is the access width (1, 2, 4 or 8 bytes).
// Called from vCPU threads: implementations guard their own state.
#pragma once

#include <cstdint>
#include <span>

namespace kestrel {

class BusDevice {
public:
    virtual ~BusDevice() = default;
    virtual void read(uint64_t offset, std::span<uint8_t> data) = 0;
    virtual void write(uint64_t offset, std::span<const uint8_t> data) = 0;
};

}  // namespace kestrel
