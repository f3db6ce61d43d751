// Bus: maps address ranges to BusDevices (one instance for port I/O, one for MMIO).
// Ranges are fixed before vCPUs start; lookup is then lock-free (read-only vector).
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "devices/bus_device.hpp"
#include "vmm/base/error.hpp"

namespace kestrel {

class Bus {
public:
    explicit Bus(std::string name) : name_(std::move(name)) {}

    // Refuses empty, wrapping or overlapping ranges.
    Result<void> insert(uint64_t base, uint64_t len, std::shared_ptr<BusDevice> dev);

    // Dispatches an access; false when nothing is mapped there (reads then return all ones).
    bool read(uint64_t addr, std::span<uint8_t> data) const;
    bool write(uint64_t addr, std::span<const uint8_t> data) const;

private:
    struct Entry {
        uint64_t base, len;
        std::shared_ptr<BusDevice> dev;
    };
    const Entry* find(uint64_t addr, uint64_t size) const;

    std::string name_;
    std::vector<Entry> entries_;  // sorted by base
};

}  // namespace kestrel
