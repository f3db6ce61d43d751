// VirtioPciDevice: the virtio 1.2 §4.1 "Virtio Over PCI Bus" transport (modern, non-
// transitional) around one VirtioDevice. Config space carries the vendor capabilities of
// §4.1.4 plus MSI-X; everything else lives in one 64-bit memory BAR (BAR0):
//
//   0x0000 common configuration   (§4.1.4.3, struct virtio_pci_common_cfg, 0x3c bytes)
//   0x1000 ISR status             (§4.1.4.5, 1 byte, read-to-clear)
//   0x2000 device configuration   (§4.1.4.6, 4 KiB -> VirtioDevice::read_config/write_config)
//   0x3000 notifications          (§4.1.4.4, queue_notify_off = queue index, multiplier 4)
//   0x4000 MSI-X table            (PCI 3.0 §6.8.2, one vector per queue + one for config)
//   then   MSI-X PBA              (next 4 KiB boundary after the table)
//
// Interrupts: a queue interrupt goes to that queue's queue_msix_vector and a config change to
// config_msix_vector through the MsixTable (masked or MSI-X disabled -> PBA pending bit).
// ISR bits are set on every interrupt, as QEMU does, though only INTx drivers read them.
// INTx is not implemented (interrupt pin 0): a driver without MSI-X gets no interrupts.
//
// Threads: vCPU threads do config and BAR accesses, the event-loop thread raises interrupts.
// `state_mutex_` guards the transport registers and is never held while calling into the
// VirtioDevice. `lifecycle_mutex_` serialises activate()/reset()/slow-path queue_notify()
// against each other (they may block, e.g. a reset waiting for in-flight I/O on the event
// loop), so a status write waits for a running activation but register accesses on other
// vCPUs do not. The event loop only ever takes state_mutex_ (briefly) and the MsixTable's
// mutex, so a reset blocking on it cannot deadlock.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <vector>

#include "devices/event_registry.hpp"
#include "devices/pci/msix.hpp"
#include "devices/pci/pci_config_space.hpp"
#include "devices/pci/pci_device.hpp"
#include "devices/virtio/virtio_device.hpp"
#include "vmm/memory/guest_memory.hpp"

namespace kestrel {

namespace virtio_pci {
// Layout of BAR0 (see the header comment).
inline constexpr uint8_t kBar = 0;
inline constexpr uint64_t kCommonOffset = 0x0000;
inline constexpr uint64_t kCommonSize = 0x3c;
inline constexpr uint64_t kIsrOffset = 0x1000;
inline constexpr uint64_t kIsrSize = 1;
inline constexpr uint64_t kDeviceConfigOffset = 0x2000;
inline constexpr uint64_t kDeviceConfigSize = 0x1000;
inline constexpr uint64_t kNotifyOffset = 0x3000;
inline constexpr uint32_t kNotifyOffMultiplier = 4;
inline constexpr uint64_t kMsixTableOffset = 0x4000;

inline constexpr uint16_t kVendorId = 0x1af4;       // §4.1.2
inline constexpr uint16_t kDeviceIdBase = 0x1040;   // + virtio device ID (§4.1.2)
inline constexpr uint16_t kNoVector = 0xffff;       // VIRTIO_MSI_NO_VECTOR (§4.1.5.1.2)
inline constexpr uint16_t kMaxQueues = 1024;        // kestrel's cap: notify region fits 4 KiB

// device_status bits (§2.1).
inline constexpr uint8_t kStatusAcknowledge = 1;
inline constexpr uint8_t kStatusDriver = 2;
inline constexpr uint8_t kStatusDriverOk = 4;
inline constexpr uint8_t kStatusFeaturesOk = 8;
inline constexpr uint8_t kStatusNeedsReset = 0x40;
inline constexpr uint8_t kStatusFailed = 0x80;

inline constexpr uint64_t kFeatureVersion1 = uint64_t{1} << 32;  // VIRTIO_F_VERSION_1 (§6)

// ISR status bits (§4.1.4.5).
inline constexpr uint8_t kIsrQueue = 1;
inline constexpr uint8_t kIsrConfig = 2;
}  // namespace virtio_pci

class VirtioPciDevice final : public PciDevice {
public:
    struct NotifyAddress {
        GuestAddress address;  // a 2-byte write here notifies queue_index
        uint16_t queue_index;
    };

    // mem/events must outlive this object; `msi` receives MSI-X messages for its vectors.
    VirtioPciDevice(std::shared_ptr<VirtioDevice> device, GuestMemory& mem,
                    EventRegistry& events, std::shared_ptr<MsiSink> msi);
    ~VirtioPciDevice() override;

    void config_read(uint16_t offset, std::span<uint8_t> data) override;
    void config_write(uint16_t offset, std::span<const uint8_t> data) override;
    std::vector<PciBarSpec> bar_specs() const override;
    void bar_read(uint8_t bar, uint64_t offset, std::span<uint8_t> data) override;
    void bar_write(uint8_t bar, uint64_t offset, std::span<const uint8_t> data) override;

    // The guest-physical notify addresses for each queue given BAR0's current address;
    // empty while BAR0 is unassigned or memory decode is off.
    std::vector<NotifyAddress> notify_addresses() const;

    // The device changed its configuration: bump config_generation, raise the config
    // interrupt (also what VirtioInterrupt::signal_config does).
    void config_changed();

    // Everything the guest's driver set up, for snapshots (plain data; the device's own part
    // is its queue positions, VirtioDevice::settle_queues).
    struct QueueState {
        uint16_t size = 0;
        uint16_t msix_vector = virtio_pci::kNoVector;
        bool enabled = false;
        uint64_t desc = 0, driver = 0, device = 0;
        std::optional<QueuePosition> position;  // activated device, enabled queue only
        bool operator==(const QueueState&) const = default;
    };
    struct State {
        uint16_t device_type = 0;       // checked against this function's on restore
        std::vector<uint8_t> config;    // PciConfigSpace::kSize bytes
        MsixTable::State msix;
        uint32_t device_feature_select = 0, driver_feature_select = 0;
        uint64_t driver_features = 0;
        uint16_t config_msix_vector = virtio_pci::kNoVector;
        uint8_t status = 0, config_generation = 0, isr = 0;
        bool activated = false;
        uint16_t queue_select = 0;
        std::vector<QueueState> queues;
        bool operator==(const State&) const = default;
    };
    // Paused VM only: an activated device settles its queues first (it may complete requests
    // to the guest then); refused when it cannot (VirtioDevice::settle_queues).
    Result<State> save();
    // Puts a saved state back: the device is reset if it was running, the registers, config
    // space (BAR addresses included: the owner calls PciRoot::reload) and MSI-X table set, and
    // an activated device activated again at its queue positions; then every enabled queue's
    // interrupt is raised once (a completion whose interrupt was in flight at the save is
    // not lost; a driver ignores a spurious one). Everything is checked against this function
    // (queue count and sizes, vectors, features offered, read-only config bytes) before
    // anything changes; a device that refuses its queues leaves the transport reset.
    Result<void> restore(const State& s);

    VirtioDevice& device() { return *device_; }
    uint16_t num_msix_vectors() const { return msix_.num_vectors(); }

private:
    class Interrupt;
    struct Queue {
        uint16_t size = 0;
        uint16_t msix_vector = virtio_pci::kNoVector;
        bool enabled = false;
        uint64_t desc = 0, driver = 0, device = 0;
    };

    // Called with state_mutex_ held.
    void reset_transport_locked();
    void common_read_locked(uint64_t offset, std::span<uint8_t> data);
    void common_write_locked(uint64_t offset, std::span<const uint8_t> data);
    uint16_t checked_vector_locked(uint16_t vector) const;
    uint8_t status_locked() const;
    std::optional<uint64_t> bar0_address_locked() const;

    void write_status(uint8_t status);  // lifecycle: takes both mutexes itself
    // lifecycle_mutex_ held. `positions`: a restored device continues from there.
    Result<void> activate(const QueuePositions* positions = nullptr);
    void notify_queue(uint16_t index);
    void signal_queue(uint16_t index);
    void signal_config();
    void sync_msix_control_locked();
    void pci_cfg_access(bool is_write, std::span<uint8_t> data);

    void bar0_read(uint64_t offset, std::span<uint8_t> data);
    void bar0_write(uint64_t offset, std::span<const uint8_t> data);

    const std::shared_ptr<VirtioDevice> device_;
    GuestMemory& mem_;
    EventRegistry& events_;
    const uint16_t num_queues_;
    const uint16_t max_queue_size_;
    const uint64_t device_features_;
    MsixTable msix_;
    const uint64_t msix_pba_offset_;
    const uint64_t bar0_size_;
    std::unique_ptr<Interrupt> interrupt_;

    std::mutex lifecycle_mutex_;  // before state_mutex_
    mutable std::mutex state_mutex_;
    PciConfigSpace config_;
    uint16_t msix_cap_ = 0;     // config space offsets of capabilities
    uint16_t pci_cfg_cap_ = 0;
    uint32_t device_feature_select_ = 0;
    uint32_t driver_feature_select_ = 0;
    uint64_t driver_features_ = 0;
    uint16_t config_msix_vector_ = virtio_pci::kNoVector;
    uint8_t status_ = 0;
    uint8_t config_generation_ = 0;
    uint8_t isr_ = 0;
    bool activated_ = false;
    uint16_t queue_select_ = 0;
    std::vector<Queue> queues_;
};

}  // namespace kestrel
