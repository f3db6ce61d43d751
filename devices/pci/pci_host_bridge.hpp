// PciHostBridge: function 0 of slot 0 on bus 0, the host bridge (class 06 00 00, PCI Code and
// ID Assignment spec §1.7). It decodes nothing itself; it only has to be there because OSes
// expect 00:00.0 to be a host bridge. ID 8086:0d57 is the one Cloud Hypervisor's virtual
// host bridge uses; Linux has no quirk keyed on it.
#pragma once

#include <mutex>

#include "devices/pci/pci_config_space.hpp"
#include "devices/pci/pci_device.hpp"

namespace kestrel {

class PciHostBridge final : public PciDevice {
public:
    static constexpr uint16_t kVendorId = 0x8086;
    static constexpr uint16_t kDeviceId = 0x0d57;

    PciHostBridge();
    void config_read(uint16_t offset, std::span<uint8_t> data) override;
    void config_write(uint16_t offset, std::span<const uint8_t> data) override;
    std::vector<PciBarSpec> bar_specs() const override { return {}; }
    void bar_read(uint8_t, uint64_t, std::span<uint8_t> data) override;
    void bar_write(uint8_t, uint64_t, std::span<const uint8_t>) override {}

private:
    std::mutex mutex_;
    PciConfigSpace config_;
};

}  // namespace kestrel
