#include "devices/pci/pci_root.hpp"

#include <algorithm>
#include <cstring>

#include "devices/pci/pci_config_space.hpp"
#include "devices/pci/pci_host_bridge.hpp"

namespace kestrel {

namespace {

// CONFIG_ADDRESS (PCI 3.0 §3.2.2.3.2, figure 3-2): bit 31 enable, 23:16 bus, 15:11 device,
// 10:8 function, 7:2 register; 30:24 and 1:0 are reserved and read back as zero.
constexpr uint32_t kConfigEnable = 1u << 31;
constexpr uint32_t kConfigAddressMask = kConfigEnable | 0x00ff'fffc;
constexpr uint64_t kConfigDataOffset = 4;

bool valid_config_access(uint16_t reg, size_t len) {
    return (len == 1 || len == 2 || len == 4) && (reg % 4) + len <= 4 &&
           reg < PciConfigSpace::kSize;
}

class MmioWindow final : public BusDevice {
public:
    explicit MmioWindow(std::shared_ptr<PciRoot> root) : root_(std::move(root)) {}
    void read(uint64_t offset, std::span<uint8_t> data) override {
        root_->mmio_read(root_->window().base + offset, data);
    }
    void write(uint64_t offset, std::span<const uint8_t> data) override {
        root_->mmio_write(root_->window().base + offset, data);
    }

private:
    std::shared_ptr<PciRoot> root_;
};

class EcamWindow final : public BusDevice {
public:
    explicit EcamWindow(std::shared_ptr<PciRoot> root) : root_(std::move(root)) {}
    void read(uint64_t offset, std::span<uint8_t> data) override {
        if (offset >= (uint64_t{1} << 28)) {  // 256 buses x 1 MiB is all ECAM can name
            std::fill(data.begin(), data.end(), 0xff);
            return;
        }
        root_->config_read(bus(offset), device(offset), function(offset), reg(offset), data);
    }
    void write(uint64_t offset, std::span<const uint8_t> data) override {
        if (offset >= (uint64_t{1} << 28)) return;
        root_->config_write(bus(offset), device(offset), function(offset), reg(offset), data);
    }

private:
    // PCIe base spec §7.2.2, table 7-1.
    static uint8_t bus(uint64_t off) { return static_cast<uint8_t>(off >> 20); }
    static uint8_t device(uint64_t off) { return static_cast<uint8_t>((off >> 15) & 0x1f); }
    static uint8_t function(uint64_t off) { return static_cast<uint8_t>((off >> 12) & 0x7); }
    static uint16_t reg(uint64_t off) { return static_cast<uint16_t>(off & 0xfff); }

    std::shared_ptr<PciRoot> root_;
};

}  // namespace

class PciConfigIo final : public BusDevice {
public:
    explicit PciConfigIo(std::shared_ptr<PciRoot> root) : root_(std::move(root)) {}

    void read(uint64_t offset, std::span<uint8_t> data) override {
        std::fill(data.begin(), data.end(), 0xff);
        if (offset == 0 && data.size() == 4) {
            uint32_t v = root_->config_address_.load();
            std::memcpy(data.data(), &v, 4);
            return;
        }
        uint16_t reg;
        uint32_t address;
        if (!data_access(offset, data.size(), address, reg)) return;
        root_->config_read(bus(address), device(address), function(address), reg, data);
    }

    void write(uint64_t offset, std::span<const uint8_t> data) override {
        // Only dword accesses hit CONFIG_ADDRESS; narrower ones pass through to other
        // devices on real chipsets (that is how Linux's pci_check_type1 probes), so drop them.
        if (offset == 0 && data.size() == 4) {
            uint32_t v;
            std::memcpy(&v, data.data(), 4);
            root_->config_address_.store(v & kConfigAddressMask);
            return;
        }
        uint16_t reg;
        uint32_t address;
        if (!data_access(offset, data.size(), address, reg)) return;
        root_->config_write(bus(address), device(address), function(address), reg, data);
    }

private:
    // A CONFIG_DATA access: byte `offset - 4` of the selected dword, enable bit set.
    bool data_access(uint64_t offset, size_t len, uint32_t& address, uint16_t& reg) const {
        if (offset < kConfigDataOffset || offset >= PciRoot::kConfigIoLength) return false;
        uint64_t byte = offset - kConfigDataOffset;
        if (byte + len > 4) return false;
        address = root_->config_address_.load();
        if (!(address & kConfigEnable)) return false;
        reg = static_cast<uint16_t>((address & 0xfc) + byte);
        return true;
    }
    static uint8_t bus(uint32_t a) { return static_cast<uint8_t>(a >> 16); }
    static uint8_t device(uint32_t a) { return static_cast<uint8_t>((a >> 11) & 0x1f); }
    static uint8_t function(uint32_t a) { return static_cast<uint8_t>((a >> 8) & 0x7); }

    std::shared_ptr<PciRoot> root_;
};

std::shared_ptr<PciRoot> PciRoot::create(Window mmio32) {
    return std::shared_ptr<PciRoot>(new PciRoot(mmio32));
}

PciRoot::PciRoot(Window mmio32) : window_(mmio32), next_bar_address_(mmio32.base) {
    slots_[0] = std::make_shared<PciHostBridge>();
}

std::shared_ptr<BusDevice> PciRoot::config_io() {
    return std::make_shared<PciConfigIo>(shared_from_this());
}
std::shared_ptr<BusDevice> PciRoot::ecam() { return std::make_shared<EcamWindow>(shared_from_this()); }
std::shared_ptr<BusDevice> PciRoot::mmio() { return std::make_shared<MmioWindow>(shared_from_this()); }

void PciRoot::set_bar_change_callback(BarChangeCallback cb) {
    std::lock_guard lock(config_mutex_);
    on_bar_change_ = std::move(cb);
}

Result<uint8_t> PciRoot::add_device(std::shared_ptr<PciDevice> dev) {
    std::lock_guard lock(config_mutex_);
    auto free = std::find(slots_.begin() + 1, slots_.end(), nullptr);
    if (free == slots_.end()) return fail("pci: all {} slots on bus 0 are taken", kMaxSlots);
    auto slot = static_cast<uint8_t>(free - slots_.begin());

    // Largest BARs first keeps natural alignment from wasting space between them.
    std::vector<PciBarSpec> bars = dev->bar_specs();
    std::sort(bars.begin(), bars.end(),
              [](const PciBarSpec& a, const PciBarSpec& b) { return a.size > b.size; });
    uint64_t next = next_bar_address_;
    const uint64_t end = window_.base + window_.size;
    std::vector<std::pair<const PciBarSpec*, uint64_t>> placed;
    for (const auto& bar : bars) {
        uint64_t base = (next + bar.size - 1) & ~(bar.size - 1);
        if (bar.size == 0 || base < next || base > end || bar.size > end - base)
            return fail("pci: no room for BAR{} ({:#x} bytes) in the MMIO window", bar.index,
                        bar.size);
        placed.emplace_back(&bar, base);
        next = base + bar.size;
    }
    next_bar_address_ = next;

    // Program the BARs and enable memory decode the way firmware leaves a device.
    for (auto [bar, base] : placed) {
        auto reg = static_cast<uint16_t>(pci_reg::kBar0 + 4 * bar->index);
        uint32_t lo = static_cast<uint32_t>(base);
        dev->config_write(reg, std::span(reinterpret_cast<const uint8_t*>(&lo), 4));
        if (bar->is_64bit) {
            uint32_t hi = static_cast<uint32_t>(base >> 32);
            dev->config_write(static_cast<uint16_t>(reg + 4),
                              std::span(reinterpret_cast<const uint8_t*>(&hi), 4));
        }
    }
    uint16_t command = 0;
    dev->config_read(pci_reg::kCommand, std::span(reinterpret_cast<uint8_t*>(&command), 2));
    command |= pci_reg::kCommandMemorySpace;
    dev->config_write(pci_reg::kCommand, std::span(reinterpret_cast<const uint8_t*>(&command), 2));

    slots_[slot] = std::move(dev);
    refresh_decode(slot);
    return slot;
}

PciDevice* PciRoot::device_at(uint8_t bus, uint8_t device, uint8_t function) {
    if (bus != 0 || function != 0 || device >= kMaxSlots) return nullptr;
    return slots_[device].get();
}

void PciRoot::config_read(uint8_t bus, uint8_t device, uint8_t function, uint16_t reg,
                          std::span<uint8_t> data) {
    std::fill(data.begin(), data.end(), 0xff);
    if (!valid_config_access(reg, data.size())) return;
    std::lock_guard lock(config_mutex_);
    if (PciDevice* dev = device_at(bus, device, function)) dev->config_read(reg, data);
}

void PciRoot::config_write(uint8_t bus, uint8_t device, uint8_t function, uint16_t reg,
                           std::span<const uint8_t> data) {
    if (!valid_config_access(reg, data.size())) return;
    std::lock_guard lock(config_mutex_);
    PciDevice* dev = device_at(bus, device, function);
    if (!dev) return;
    dev->config_write(reg, data);
    // Only the command register and the BARs move decoding.
    bool touches_command = reg < pci_reg::kCommand + 2 && pci_reg::kCommand < reg + data.size();
    bool touches_bars = reg < pci_reg::kBar0 + 24 && pci_reg::kBar0 < reg + data.size();
    if (touches_command || touches_bars) refresh_decode(device);
}

void PciRoot::reload(uint8_t slot) {
    std::lock_guard lock(config_mutex_);
    if (slot < kMaxSlots && slots_[slot]) refresh_decode(slot);
}

std::optional<uint64_t> PciRoot::read_decode(PciDevice& dev, const PciBarSpec& bar) {
    uint16_t command = 0;
    dev.config_read(pci_reg::kCommand, std::span(reinterpret_cast<uint8_t*>(&command), 2));
    if (!(command & pci_reg::kCommandMemorySpace)) return std::nullopt;
    auto reg = static_cast<uint16_t>(pci_reg::kBar0 + 4 * bar.index);
    uint32_t lo = 0, hi = 0;
    dev.config_read(reg, std::span(reinterpret_cast<uint8_t*>(&lo), 4));
    if (bar.is_64bit)
        dev.config_read(static_cast<uint16_t>(reg + 4), std::span(reinterpret_cast<uint8_t*>(&hi), 4));
    uint64_t base = (uint64_t{hi} << 32 | lo) & ~uint64_t{pci_reg::kBarMemFlagsMask};
    // Only a BAR wholly inside the window is reachable through mmio().
    if (base < window_.base || base - window_.base > window_.size ||
        bar.size > window_.size - (base - window_.base))
        return std::nullopt;
    return base;
}

void PciRoot::refresh_decode(uint8_t slot) {
    const std::shared_ptr<PciDevice>& dev = slots_[slot];
    std::vector<PciBarChange> changes;
    std::vector<Decode> fresh;
    for (const auto& bar : dev->bar_specs())
        if (auto base = read_decode(*dev, bar)) fresh.push_back({*base, bar.size, slot, bar.index, dev});
    {
        std::unique_lock lock(decode_mutex_);
        for (const auto& bar : dev->bar_specs()) {
            std::optional<uint64_t> before, after;
            for (auto& d : decodes_)
                if (d.slot == slot && d.bar == bar.index) before = d.base;
            for (auto& d : fresh)
                if (d.bar == bar.index) after = d.base;
            if (before != after) changes.push_back({slot, bar.index, bar.size, before, after});
        }
        std::erase_if(decodes_, [slot](const Decode& d) { return d.slot == slot; });
        decodes_.insert(decodes_.end(), fresh.begin(), fresh.end());
    }
    if (on_bar_change_)
        for (const auto& c : changes) on_bar_change_(c);
}

std::optional<uint64_t> PciRoot::bar_address(uint8_t slot, uint8_t bar) const {
    std::shared_lock lock(decode_mutex_);
    for (auto& d : decodes_)
        if (d.slot == slot && d.bar == bar) return d.base;
    return std::nullopt;
}

std::shared_ptr<PciDevice> PciRoot::route(uint64_t address, size_t len, uint8_t& bar,
                                          uint64_t& offset) const {
    std::shared_lock lock(decode_mutex_);
    for (auto& d : decodes_) {
        if (address < d.base) continue;
        uint64_t off = address - d.base;
        if (off >= d.size || len > d.size - off) continue;
        bar = d.bar;
        offset = off;
        return d.dev;
    }
    return nullptr;
}

void PciRoot::mmio_read(uint64_t address, std::span<uint8_t> data) {
    uint8_t bar = 0;
    uint64_t offset = 0;
    if (auto dev = route(address, data.size(), bar, offset))
        dev->bar_read(bar, offset, data);
    else
        std::fill(data.begin(), data.end(), 0xff);
}

void PciRoot::mmio_write(uint64_t address, std::span<const uint8_t> data) {
    uint8_t bar = 0;
    uint64_t offset = 0;
    if (auto dev = route(address, data.size(), bar, offset)) dev->bar_write(bar, offset, data);
}

}  // namespace kestrel
