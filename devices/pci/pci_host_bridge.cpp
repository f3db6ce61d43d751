#include "devices/pci/pci_host_bridge.hpp"

#include <algorithm>

namespace kestrel {

PciHostBridge::PciHostBridge()
    : config_(PciIdentity{.vendor_id = kVendorId,
                          .device_id = kDeviceId,
                          .revision_id = 0,
                          .base_class = 0x06,  // bridge
                          .subclass = 0x00,    // host bridge
                          .prog_if = 0x00,
                          .subsystem_vendor_id = 0,
                          .subsystem_id = 0}) {}

void PciHostBridge::config_read(uint16_t offset, std::span<uint8_t> data) {
    std::lock_guard lock(mutex_);
    config_.read(offset, data);
}

void PciHostBridge::config_write(uint16_t offset, std::span<const uint8_t> data) {
    std::lock_guard lock(mutex_);
    config_.write(offset, data);
}

void PciHostBridge::bar_read(uint8_t, uint64_t, std::span<uint8_t> data) {
    std::fill(data.begin(), data.end(), 0xff);
}

}  // namespace kestrel
