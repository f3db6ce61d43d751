// PciRoot: PCI bus 0 behind a host bridge, as the guest reaches it through three windows:
//   config_io() - configuration mechanism #1 at ports 0xcf8..0xcff (PCI Local Bus 3.0
//                 §3.2.2.3.2): CONFIG_ADDRESS (dword at 0xcf8) selects bus/device/function/
//                 register, CONFIG_DATA (0xcfc..0xcff) moves 1, 2 or 4 bytes of that dword;
//   ecam()      - the PCIe enhanced configuration access window (PCIe base spec §7.2.2),
//                 offset = bus << 20 | device << 15 | function << 12 | register, bus 0 only;
//   mmio()      - the whole 32-bit BAR window as one MMIO device, routing each access to
//                 whichever memory BAR decodes it right now (address, memory space enable).
// Slot 0 holds the host bridge; devices go into slots 1..31 as single-function devices.
// Absent devices, functions and buses read as all ones (PCI 3.0 §6.1: a read of a vendor ID
// of 0xffff means nothing is there) and ignore writes.
//
// BARs are placed at registration like firmware would: naturally aligned, bumped upward
// through the window, memory decode enabled. Linux keeps such assignments when they sit inside
// the host bridge window the ACPI tables describe. A guest may move BARs; a BAR only decodes
// while it lies entirely inside the window (mmio() cannot see anything else), and every change
// of a BAR's decoded address is reported through the BarChangeCallback (the VMM moves its
// ioeventfds then).
//
// Threads: config cycles are serialised by one mutex (and the callback runs under it, so it
// must not issue config cycles through this root); MMIO routing takes a shared lock on the
// decode table and calls the device without it.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <span>
#include <vector>

#include "boot/x86_layout.hpp"
#include "devices/bus_device.hpp"
#include "devices/pci/pci_device.hpp"
#include "vmm/base/error.hpp"

namespace kestrel {

struct PciBarChange {
    uint8_t slot = 0;
    uint8_t bar = 0;
    uint64_t size = 0;
    std::optional<uint64_t> old_address;  // nullopt = was not decoding
    std::optional<uint64_t> new_address;  // nullopt = no longer decoding
};

class PciRoot : public std::enable_shared_from_this<PciRoot> {
public:
    struct Window {
        uint64_t base = 0;
        uint64_t size = 0;
    };
    using BarChangeCallback = std::function<void(const PciBarChange&)>;

    static constexpr uint8_t kMaxSlots = 32;
    static constexpr uint64_t kConfigIoLength = 8;  // 0xcf8..0xcff

    static std::shared_ptr<PciRoot> create(Window mmio32 = {x86::kPciMmio32Start,
                                                            x86::kPciMmio32Size});

    // Puts `dev` in the lowest free slot and places its BARs; returns the slot number.
    // Call before vCPUs run.
    Result<uint8_t> add_device(std::shared_ptr<PciDevice> dev);
    void set_bar_change_callback(BarChangeCallback cb);

    std::shared_ptr<BusDevice> config_io();  // map at x86::kPciConfigPort, kConfigIoLength
    std::shared_ptr<BusDevice> ecam();       // map at x86::kPciEcamStart, x86::kPciEcamSize
    std::shared_ptr<BusDevice> mmio();       // map at window().base, window().size
    Window window() const { return window_; }

    // One configuration cycle; anything but a 1/2/4-byte access inside one dword is ignored
    // (reads all ones).
    void config_read(uint8_t bus, uint8_t device, uint8_t function, uint16_t reg,
                     std::span<uint8_t> data);
    void config_write(uint8_t bus, uint8_t device, uint8_t function, uint16_t reg,
                      std::span<const uint8_t> data);

    // MMIO at a guest-physical address; nothing decoding there reads all ones.
    void mmio_read(uint64_t address, std::span<uint8_t> data);
    void mmio_write(uint64_t address, std::span<const uint8_t> data);

    // The device in `slot` had its config space put back (a snapshot): re-reads where its
    // BARs decode and reports the changes as a guest's BAR writes would.
    void reload(uint8_t slot);

    // Where BAR `bar` of the device in `slot` decodes now (nullopt: it does not).
    std::optional<uint64_t> bar_address(uint8_t slot, uint8_t bar) const;

private:
    struct Decode {
        uint64_t base, size;
        uint8_t slot, bar;
        std::shared_ptr<PciDevice> dev;
    };

    explicit PciRoot(Window mmio32);
    PciDevice* device_at(uint8_t bus, uint8_t device, uint8_t function);  // config_mutex_ held
    void refresh_decode(uint8_t slot);                                      // config_mutex_ held
    std::optional<uint64_t> read_decode(PciDevice& dev, const PciBarSpec& bar);
    std::shared_ptr<PciDevice> route(uint64_t address, size_t len, uint8_t& bar,
                                     uint64_t& offset) const;
    friend class PciConfigIo;

    const Window window_;
    std::mutex config_mutex_;
    std::array<std::shared_ptr<PciDevice>, kMaxSlots> slots_;
    uint64_t next_bar_address_;
    BarChangeCallback on_bar_change_;
    std::atomic<uint32_t> config_address_{0};  // CONFIG_ADDRESS at 0xcf8

    mutable std::shared_mutex decode_mutex_;
    std::vector<Decode> decodes_;
};

}  // namespace kestrel
