#include "devices/virtio/virtio_pci.hpp"

#include <algorithm>
#include <bit>
#include <cstring>

#include "vmm/base/log.hpp"

namespace kestrel {

using namespace virtio_pci;

namespace {

// struct virtio_pci_cap (virtio 1.2 §4.1.4): the bytes after cap_vndr and cap_next.
//   +2 cap_len  +3 cfg_type  +4 bar  +5 id  +6 padding[2]  +8 offset (le32)  +12 length (le32)
// The notify capability appends notify_off_multiplier (le32, §4.1.4.4) and the PCI
// configuration access capability pci_cfg_data[4] (§4.1.4.9), both at +16.
constexpr uint8_t kCapVendor = 0x09;  // PCI 3.0 appendix H: vendor specific
constexpr size_t kCapLen = 16;
constexpr size_t kCapLenExtended = 20;
constexpr uint16_t kCapBar = 4;
constexpr uint16_t kCapOffset = 8;
constexpr uint16_t kCapLength = 12;
constexpr uint16_t kCapExtra = 16;

enum class CfgType : uint8_t {  // §4.1.4 cfg_type
    common = 1,
    notify = 2,
    isr = 3,
    device = 4,
    pci = 5,
};

std::vector<uint8_t> virtio_cap_body(CfgType type, uint64_t offset, uint64_t length,
                                     bool extended, uint32_t extra) {
    std::vector<uint8_t> b(extended ? kCapLenExtended - 2 : kCapLen - 2, 0);
    auto put32 = [&](uint16_t cap_off, uint32_t v) { std::memcpy(&b[cap_off - 2], &v, 4); };
    b[0] = static_cast<uint8_t>(extended ? kCapLenExtended : kCapLen);
    b[1] = static_cast<uint8_t>(type);
    b[kCapBar - 2] = kBar;
    put32(kCapOffset, static_cast<uint32_t>(offset));
    put32(kCapLength, static_cast<uint32_t>(length));
    if (extended) put32(kCapExtra, extra);
    return b;
}

// Common configuration fields (§4.1.4.3, struct virtio_pci_common_cfg).
namespace common {
constexpr uint64_t kDeviceFeatureSelect = 0x00;  // le32 RW
constexpr uint64_t kDeviceFeature = 0x04;        // le32 RO
constexpr uint64_t kDriverFeatureSelect = 0x08;  // le32 RW
constexpr uint64_t kDriverFeature = 0x0c;        // le32 RW
constexpr uint64_t kConfigMsixVector = 0x10;     // le16 RW
constexpr uint64_t kNumQueues = 0x12;            // le16 RO
constexpr uint64_t kDeviceStatus = 0x14;         // u8 RW
constexpr uint64_t kConfigGeneration = 0x15;     // u8 RO
constexpr uint64_t kQueueSelect = 0x16;          // le16 RW
constexpr uint64_t kQueueSize = 0x18;            // le16 RW
constexpr uint64_t kQueueMsixVector = 0x1a;      // le16 RW
constexpr uint64_t kQueueEnable = 0x1c;          // le16 RW
constexpr uint64_t kQueueNotifyOff = 0x1e;       // le16 RO
constexpr uint64_t kQueueDesc = 0x20;            // le64 RW
constexpr uint64_t kQueueDriver = 0x28;          // le64 RW
constexpr uint64_t kQueueDevice = 0x30;          // le64 RW
constexpr uint64_t kQueueNotifConfigData = 0x38; // le16 RO (VIRTIO_F_NOTIF_CONFIG_DATA)
constexpr uint64_t kQueueReset = 0x3a;           // le16 RW (VIRTIO_F_RING_RESET)
static_assert(kQueueReset + 2 == kCommonSize);

struct Field {
    uint64_t offset;
    uint64_t width;
};
constexpr Field kFields[] = {
    {kDeviceFeatureSelect, 4}, {kDeviceFeature, 4}, {kDriverFeatureSelect, 4},
    {kDriverFeature, 4},       {kConfigMsixVector, 2}, {kNumQueues, 2},
    {kDeviceStatus, 1},        {kConfigGeneration, 1}, {kQueueSelect, 2},
    {kQueueSize, 2},           {kQueueMsixVector, 2},  {kQueueEnable, 2},
    {kQueueNotifyOff, 2},      {kQueueDesc, 8},        {kQueueDriver, 8},
    {kQueueDevice, 8},         {kQueueNotifConfigData, 2}, {kQueueReset, 2},
};
}  // namespace common

// PCI Code and ID Assignment spec §1.2 (01 80: other mass storage), §1.3 (02 00: ethernet);
// base class ff: "device does not fit any defined class".
PciIdentity identity_for(uint16_t device_type) {
    uint8_t base_class = 0xff, subclass = 0x00;
    if (device_type == 2) base_class = 0x01, subclass = 0x80;  // block
    if (device_type == 1) base_class = 0x02, subclass = 0x00;  // network
    return PciIdentity{
        .vendor_id = kVendorId,
        .device_id = static_cast<uint16_t>(kDeviceIdBase + device_type),
        // §4.1.2.1: non-transitional devices SHOULD have revision >= 1 and a subsystem
        // device ID >= 0x40 (keeps legacy drivers off them).
        .revision_id = 1,
        .base_class = base_class,
        .subclass = subclass,
        .prog_if = 0,
        .subsystem_vendor_id = kVendorId,
        .subsystem_id = static_cast<uint16_t>(0x40 + device_type),
    };
}

uint64_t align_up(uint64_t v, uint64_t a) { return (v + a - 1) & ~(a - 1); }

bool inside(uint64_t offset, size_t len, uint64_t start, uint64_t size) {
    return offset >= start && offset - start < size && len <= size - (offset - start);
}

}  // namespace

class VirtioPciDevice::Interrupt final : public VirtioInterrupt {
public:
    explicit Interrupt(VirtioPciDevice& owner) : owner_(owner) {}
    void signal_queue(uint16_t queue_index) override { owner_.signal_queue(queue_index); }
    void signal_config() override { owner_.config_changed(); }

private:
    VirtioPciDevice& owner_;
};

VirtioPciDevice::VirtioPciDevice(std::shared_ptr<VirtioDevice> device, GuestMemory& mem,
                                 EventRegistry& events, std::shared_ptr<MsiSink> msi)
    : device_(std::move(device)),
      mem_(mem),
      events_(events),
      num_queues_(std::min(device_->num_queues(), kMaxQueues)),
      max_queue_size_(device_->max_queue_size()),
      device_features_(device_->device_features()),
      // One vector per queue plus one for configuration changes: what Linux's vp_find_vqs
      // asks for first (it falls back to shared vectors when it gets fewer).
      msix_(static_cast<uint16_t>(num_queues_ + 1), std::move(msi)),
      msix_pba_offset_(kMsixTableOffset + align_up(msix_.table_bytes(), 0x1000)),
      bar0_size_(std::bit_ceil(msix_pba_offset_ + align_up(msix_.pba_bytes(), 0x1000))),
      interrupt_(std::make_unique<Interrupt>(*this)),
      config_(identity_for(device_->device_type())) {
    // BAR0 is 64-bit but not prefetchable: reads of ISR and the notify region have side
    // effects. The layout fits well inside 4 GiB so firmware-style placement keeps it low.
    (void)config_.add_memory_bar({.index = kBar, .size = bar0_size_, .is_64bit = true,
                                  .prefetchable = false});

    // Vendor capabilities in the order Linux's virtio_pci_modern probe looks them up; it
    // uses the first of each cfg_type (§4.1.4.1).
    auto add = [&](CfgType type, uint64_t offset, uint64_t length, bool extended = false,
                   uint32_t extra = 0) {
        auto body = virtio_cap_body(type, offset, length, extended, extra);
        return config_.add_capability(kCapVendor, body).value_or(0);
    };
    add(CfgType::common, kCommonOffset, kCommonSize);
    add(CfgType::notify, kNotifyOffset, uint64_t{num_queues_} * kNotifyOffMultiplier, true,
        kNotifyOffMultiplier);
    add(CfgType::isr, kIsrOffset, kIsrSize);
    add(CfgType::device, kDeviceConfigOffset, kDeviceConfigSize);
    // §4.1.4.9: bar, offset, length and pci_cfg_data are writable by the driver.
    {
        auto body = virtio_cap_body(CfgType::pci, 0, 0, true, 0);
        std::vector<uint8_t> writable(body.size(), 0);
        writable[kCapBar - 2] = 0xff;
        std::fill_n(writable.begin() + (kCapOffset - 2), 12, 0xff);  // offset, length, data
        pci_cfg_cap_ = config_.add_capability(kCapVendor, body, writable).value_or(0);
    }
    auto msix_body = msix::capability_body(msix_.num_vectors(), kBar,
                                           static_cast<uint32_t>(kMsixTableOffset), kBar,
                                           static_cast<uint32_t>(msix_pba_offset_));
    auto msix_writable = msix::capability_writable();
    msix_cap_ = config_.add_capability(msix::kCapabilityId, msix_body, msix_writable).value_or(0);

    std::lock_guard lock(state_mutex_);
    reset_transport_locked();
}

VirtioPciDevice::~VirtioPciDevice() {
    // The device holds a reference to interrupt_ while active: stop it before that dies.
    if (activated_) device_->reset();
}

std::vector<PciBarSpec> VirtioPciDevice::bar_specs() const { return config_.bars(); }

void VirtioPciDevice::reset_transport_locked() {
    device_feature_select_ = 0;
    driver_feature_select_ = 0;
    driver_features_ = 0;
    config_msix_vector_ = kNoVector;
    status_ = 0;
    isr_ = 0;
    activated_ = false;
    queue_select_ = 0;
    queues_.assign(num_queues_, Queue{.size = max_queue_size_});
}

// ---- PCI configuration space -------------------------------------------------------------

void VirtioPciDevice::config_read(uint16_t offset, std::span<uint8_t> data) {
    const uint16_t cfg_data = static_cast<uint16_t>(pci_cfg_cap_ + kCapExtra);
    bool window = pci_cfg_cap_ != 0 && offset < cfg_data + 4 && cfg_data < offset + data.size();
    if (window) pci_cfg_access(false, {});
    std::lock_guard lock(state_mutex_);
    config_.read(offset, data);
}

void VirtioPciDevice::config_write(uint16_t offset, std::span<const uint8_t> data) {
    const uint16_t cfg_data = static_cast<uint16_t>(pci_cfg_cap_ + kCapExtra);
    bool window = pci_cfg_cap_ != 0 && offset < cfg_data + 4 && cfg_data < offset + data.size();
    {
        std::lock_guard lock(state_mutex_);
        config_.write(offset, data);
        const uint16_t control = static_cast<uint16_t>(msix_cap_ + msix::kMessageControlOffset);
        if (msix_cap_ != 0 && offset < control + 2 && control < offset + data.size())
            sync_msix_control_locked();
    }
    if (window) {
        std::array<uint8_t, 4> bytes{};
        {
            std::lock_guard lock(state_mutex_);
            config_.read(cfg_data, bytes);
        }
        pci_cfg_access(true, bytes);
    }
}

void VirtioPciDevice::sync_msix_control_locked() {
    msix_.set_control(config_.u16(static_cast<uint16_t>(msix_cap_ + msix::kMessageControlOffset)));
}

// §4.1.4.9: an access to pci_cfg_data performs an access of cap.length bytes at cap.offset
// in BAR cap.bar. Only 1, 2 or 4 byte, naturally aligned accesses to BAR0 are carried out.
void VirtioPciDevice::pci_cfg_access(bool is_write, std::span<uint8_t> bytes) {
    uint8_t bar;
    uint32_t offset, length;
    {
        std::lock_guard lock(state_mutex_);
        bar = config_.u8(static_cast<uint16_t>(pci_cfg_cap_ + kCapBar));
        offset = config_.u32(static_cast<uint16_t>(pci_cfg_cap_ + kCapOffset));
        length = config_.u32(static_cast<uint16_t>(pci_cfg_cap_ + kCapLength));
    }
    if (bar != kBar || (length != 1 && length != 2 && length != 4) || offset % length != 0 ||
        offset >= bar0_size_)
        return;
    if (is_write) {
        bar0_write(offset, bytes.first(length));
        return;
    }
    std::array<uint8_t, 4> value{};
    bar0_read(offset, std::span(value).first(length));
    std::lock_guard lock(state_mutex_);
    for (uint32_t i = 0; i < 4; ++i)
        config_.set_u8(static_cast<uint16_t>(pci_cfg_cap_ + kCapExtra + i), value[i]);
}

// ---- BAR0 ---------------------------------------------------------------------------------

void VirtioPciDevice::bar_read(uint8_t bar, uint64_t offset, std::span<uint8_t> data) {
    if (bar != kBar) {
        std::fill(data.begin(), data.end(), 0xff);
        return;
    }
    bar0_read(offset, data);
}

void VirtioPciDevice::bar_write(uint8_t bar, uint64_t offset, std::span<const uint8_t> data) {
    if (bar == kBar) bar0_write(offset, data);
}

void VirtioPciDevice::bar0_read(uint64_t offset, std::span<uint8_t> data) {
    std::fill(data.begin(), data.end(), 0);
    if (data.empty() || data.size() > 8) return;
    if (inside(offset, data.size(), kCommonOffset, kCommonSize)) {
        bool device_needs_reset = device_->needs_reset();  // never call the device locked
        std::lock_guard lock(state_mutex_);
        if (device_needs_reset) status_ |= kStatusNeedsReset;
        common_read_locked(offset - kCommonOffset, data);
    } else if (offset == kIsrOffset) {
        // §4.1.4.5: reading ISR status resets it.
        std::lock_guard lock(state_mutex_);
        data[0] = isr_;
        isr_ = 0;
    } else if (inside(offset, data.size(), kDeviceConfigOffset, kDeviceConfigSize)) {
        device_->read_config(offset - kDeviceConfigOffset, data);
    } else if (inside(offset, data.size(), kMsixTableOffset, msix_.table_bytes())) {
        msix_.table_read(offset - kMsixTableOffset, data);
    } else if (inside(offset, data.size(), msix_pba_offset_, msix_.pba_bytes())) {
        msix_.pba_read(offset - msix_pba_offset_, data);
    }
    // Notify region and gaps read as zero.
}

void VirtioPciDevice::bar0_write(uint64_t offset, std::span<const uint8_t> data) {
    if (data.empty() || data.size() > 8) return;
    if (inside(offset, data.size(), kCommonOffset, kCommonSize)) {
        if (offset - kCommonOffset == common::kDeviceStatus && data.size() == 1) {
            write_status(data[0]);
            return;
        }
        std::lock_guard lock(state_mutex_);
        common_write_locked(offset - kCommonOffset, data);
    } else if (inside(offset, data.size(), kNotifyOffset,
                      uint64_t{num_queues_} * kNotifyOffMultiplier)) {
        // §4.1.5.2: the queue is the one whose notify address was written; the value (the
        // queue index, or more with VIRTIO_F_NOTIFICATION_DATA) adds nothing we need.
        uint64_t rel = offset - kNotifyOffset;
        if (rel % kNotifyOffMultiplier == 0)
            notify_queue(static_cast<uint16_t>(rel / kNotifyOffMultiplier));
    } else if (inside(offset, data.size(), kDeviceConfigOffset, kDeviceConfigSize)) {
        device_->write_config(offset - kDeviceConfigOffset, data);
    } else if (inside(offset, data.size(), kMsixTableOffset, msix_.table_bytes())) {
        msix_.table_write(offset - kMsixTableOffset, data);
    }
    // ISR, PBA and gaps are read-only.
}

// ---- Common configuration -----------------------------------------------------------------

uint8_t VirtioPciDevice::status_locked() const { return status_; }

uint16_t VirtioPciDevice::checked_vector_locked(uint16_t vector) const {
    // §4.1.5.1.2: a vector the device cannot use reads back as NO_VECTOR.
    return vector < msix_.num_vectors() ? vector : kNoVector;
}

void VirtioPciDevice::common_read_locked(uint64_t offset, std::span<uint8_t> data) {
    std::array<uint8_t, kCommonSize> image{};
    auto put = [&](uint64_t at, uint64_t v, size_t width) { std::memcpy(&image[at], &v, width); };
    put(common::kDeviceFeatureSelect, device_feature_select_, 4);
    uint64_t df = device_feature_select_ == 0   ? device_features_ & 0xffffffffu
                  : device_feature_select_ == 1 ? device_features_ >> 32
                                                : 0;
    put(common::kDeviceFeature, df, 4);
    put(common::kDriverFeatureSelect, driver_feature_select_, 4);
    uint64_t drv = driver_feature_select_ == 0   ? driver_features_ & 0xffffffffu
                   : driver_feature_select_ == 1 ? driver_features_ >> 32
                                                 : 0;
    put(common::kDriverFeature, drv, 4);
    put(common::kConfigMsixVector, config_msix_vector_, 2);
    put(common::kNumQueues, num_queues_, 2);
    put(common::kDeviceStatus, status_locked(), 1);
    put(common::kConfigGeneration, config_generation_, 1);
    put(common::kQueueSelect, queue_select_, 2);
    if (queue_select_ < num_queues_) {
        const Queue& q = queues_[queue_select_];
        put(common::kQueueSize, q.size, 2);
        put(common::kQueueMsixVector, q.msix_vector, 2);
        put(common::kQueueEnable, q.enabled ? 1 : 0, 2);
        put(common::kQueueNotifyOff, queue_select_, 2);
        put(common::kQueueDesc, q.desc, 8);
        put(common::kQueueDriver, q.driver, 8);
        put(common::kQueueDevice, q.device, 8);
    } else {
        // §4.1.4.3.2: queue_size 0 tells the driver the queue is unavailable.
        put(common::kQueueMsixVector, kNoVector, 2);
    }
    std::memcpy(data.data(), &image[offset], data.size());
}

void VirtioPciDevice::common_write_locked(uint64_t offset, std::span<const uint8_t> data) {
    // §4.1.3.1: the driver accesses each field with its own width; 64-bit fields may also
    // be written as two 32-bit halves. Anything else is dropped.
    const common::Field* field = nullptr;
    for (const auto& f : common::kFields)
        if (offset >= f.offset && offset < f.offset + f.width) field = &f;
    if (!field) return;
    uint64_t within = offset - field->offset;
    bool whole = within == 0 && data.size() == field->width;
    bool half = field->width == 8 && data.size() == 4 && within % 4 == 0;
    if (!whole && !half) return;
    uint64_t value = 0;
    std::memcpy(&value, data.data(), data.size());

    auto merge64 = [&](uint64_t old) {
        if (whole) return value;
        uint64_t mask = uint64_t{0xffffffff} << (within * 8);
        return (old & ~mask) | (value << (within * 8));
    };
    Queue* q = queue_select_ < num_queues_ ? &queues_[queue_select_] : nullptr;
    // §4.1.4.3.2: the driver configures a queue before enabling it; later writes are ignored.
    bool queue_writable = q && !q->enabled && !activated_;

    switch (field->offset) {
    case common::kDeviceFeatureSelect: device_feature_select_ = static_cast<uint32_t>(value); break;
    case common::kDriverFeatureSelect: driver_feature_select_ = static_cast<uint32_t>(value); break;
    case common::kDriverFeature:
        // §3.1.1: features are fixed once FEATURES_OK is set.
        if (status_ & kStatusFeaturesOk) break;
        if (driver_feature_select_ == 0)
            driver_features_ = (driver_features_ & ~uint64_t{0xffffffff}) | (value & 0xffffffff);
        else if (driver_feature_select_ == 1)
            driver_features_ = (driver_features_ & 0xffffffff) | (value << 32);
        break;
    case common::kConfigMsixVector:
        config_msix_vector_ = checked_vector_locked(static_cast<uint16_t>(value));
        break;
    case common::kQueueSelect: queue_select_ = static_cast<uint16_t>(value); break;
    case common::kQueueSize:
        // Split rings need a power of two (§2.7) no larger than the device's maximum.
        if (queue_writable && value != 0 && std::has_single_bit(value) && value <= max_queue_size_)
            q->size = static_cast<uint16_t>(value);
        break;
    case common::kQueueMsixVector:
        if (q) q->msix_vector = checked_vector_locked(static_cast<uint16_t>(value));
        break;
    case common::kQueueEnable:
        // §4.1.4.3.2: the driver MUST NOT write 0; a 1 enables the queue.
        if (queue_writable && value == 1) q->enabled = true;
        break;
    case common::kQueueDesc:
        if (queue_writable) q->desc = merge64(q->desc);
        break;
    case common::kQueueDriver:
        if (queue_writable) q->driver = merge64(q->driver);
        break;
    case common::kQueueDevice:
        if (queue_writable) q->device = merge64(q->device);
        break;
    default: break;  // read-only fields; queue_reset without VIRTIO_F_RING_RESET
    }
}

// ---- Status, activation, reset ------------------------------------------------------------

void VirtioPciDevice::write_status(uint8_t status) {
    std::lock_guard life(lifecycle_mutex_);
    if (status == 0) {
        // §2.4 / §4.1.4.3.2: writing 0 resets the device; reading status returns 0 once it
        // is done, which holds because the vCPU only returns from this write afterwards.
        device_->reset();
        std::lock_guard lock(state_mutex_);
        reset_transport_locked();
        return;
    }
    {
        std::lock_guard lock(state_mutex_);
        uint8_t old = status_;
        // NEEDS_RESET is the device's bit; the driver cannot set or clear it.
        uint8_t next = static_cast<uint8_t>((status & ~kStatusNeedsReset) | (old & kStatusNeedsReset));
        if ((next & kStatusFeaturesOk) && !(old & kStatusFeaturesOk)) {
            // §2.2.2 / §6.1: refuse features the device did not offer, and (non-transitional
            // device) a driver that did not accept VERSION_1. FEATURES_OK then reads clear.
            bool subset = (driver_features_ & ~device_features_) == 0;
            bool modern = (driver_features_ & kFeatureVersion1) != 0;
            if (!subset || !modern) {
                log::debug("virtio-pci: refusing features {:#x} (device offers {:#x})",
                           driver_features_, device_features_);
                next &= static_cast<uint8_t>(~kStatusFeaturesOk);
            }
        }
        status_ = next;
        if (!(next & kStatusDriverOk) || activated_) return;
        if (!(next & kStatusFeaturesOk)) {
            // DRIVER_OK without negotiated features (§3.1.1 step order broken).
            status_ |= kStatusNeedsReset;
            return;
        }
        activated_ = true;
    }
    (void)activate();  // a failure sets NEEDS_RESET itself
}

Result<void> VirtioPciDevice::activate(const QueuePositions* positions) {  // lifecycle_mutex_ held
    std::vector<QueueConfig> queues;
    uint64_t features;
    {
        std::lock_guard lock(state_mutex_);
        features = driver_features_;
        queues.reserve(queues_.size());
        for (size_t i = 0; i < queues_.size(); ++i) {
            const Queue& q = queues_[i];
            queues.push_back(QueueConfig{.size = q.size,
                                         .ready = q.enabled,
                                         .desc = GuestAddress(q.desc),
                                         .avail = GuestAddress(q.driver),
                                         .used = GuestAddress(q.device),
                                         .position = positions ? (*positions)[i] : std::nullopt});
        }
    }
    // Logged once per activation so what the guest's driver negotiated can be read from the
    // device side (kestrel --log-level info).
    {
        size_t enabled = 0;
        for (const auto& q : queues) enabled += q.ready;
        log::info("virtio-pci: device type {} activated: driver features {:#x} of offered {:#x}, "
                  "{} of {} queues enabled",
                  device_->device_type(), features, device_->device_features(), enabled,
                  queues.size());
    }
    auto r = device_->activate(ActivateContext{.mem = mem_,
                                               .acked_features = features,
                                               .queues = std::move(queues),
                                               .interrupt = *interrupt_,
                                               .events = events_});
    if (r) return {};
    if (positions) return r;  // a restore: the caller says why and resets the transport
    // §2.1.2: the device signals a fatal error with DEVICE_NEEDS_RESET and a config change.
    log::warn("virtio-pci: activating device type {} failed: {}", device_->device_type(),
              r.error().what());
    {
        std::lock_guard lock(state_mutex_);
        status_ |= kStatusNeedsReset;
    }
    config_changed();
    return {};
}

void VirtioPciDevice::notify_queue(uint16_t index) {
    // Serialised with activate/reset so the device never sees a notify for a queue it is
    // not running. This is the MMIO-exit path; ioeventfds bypass it entirely.
    std::lock_guard life(lifecycle_mutex_);
    {
        std::lock_guard lock(state_mutex_);
        if (!activated_ || index >= num_queues_) return;
    }
    device_->queue_notify(index);
}

// ---- Snapshots ----------------------------------------------------------------------------

Result<VirtioPciDevice::State> VirtioPciDevice::save() {
    std::lock_guard life(lifecycle_mutex_);
    bool active;
    {
        std::lock_guard lock(state_mutex_);
        active = activated_;
    }
    QueuePositions positions;
    if (active) {
        auto settled = device_->settle_queues();  // never with state_mutex_ held
        if (!settled) return std::unexpected(settled.error());
        positions = std::move(*settled);
        if (positions.size() != num_queues_)
            return fail("virtio device type {}: {} queue positions for {} queues", device_->device_type(),
                        positions.size(), num_queues_);
    }
    const bool device_needs_reset = device_->needs_reset();
    std::lock_guard lock(state_mutex_);
    if (device_needs_reset) status_ |= kStatusNeedsReset;
    State s;
    s.device_type = device_->device_type();
    s.config.assign(config_.image().begin(), config_.image().end());
    s.msix = msix_.save();
    s.device_feature_select = device_feature_select_;
    s.driver_feature_select = driver_feature_select_;
    s.driver_features = driver_features_;
    s.config_msix_vector = config_msix_vector_;
    s.status = status_;
    s.config_generation = config_generation_;
    s.isr = isr_;
    s.activated = activated_;
    s.queue_select = queue_select_;
    for (size_t i = 0; i < queues_.size(); ++i) {
        const Queue& q = queues_[i];
        s.queues.push_back({q.size, q.msix_vector, q.enabled, q.desc, q.driver, q.device,
                            active && q.enabled ? positions[i] : std::nullopt});
    }
    return s;
}

Result<void> VirtioPciDevice::restore(const State& s) {
    // Checked first, against this function: nothing changes when any of it is refused.
    if (s.device_type != device_->device_type())
        return fail("virtio device type {}, this function is type {}", s.device_type, device_->device_type());
    if (s.queues.size() != num_queues_) return fail("{} queues, this device has {}", s.queues.size(), num_queues_);
    auto vector_ok = [&](uint16_t v) { return v == kNoVector || v < msix_.num_vectors(); };
    if (!vector_ok(s.config_msix_vector)) return fail("config_msix_vector {} is not one of the {} vectors", s.config_msix_vector, msix_.num_vectors());
    if ((s.status & kStatusFeaturesOk) &&
        ((s.driver_features & ~device_features_) != 0 || !(s.driver_features & kFeatureVersion1)))
        return fail("driver features {:#x} with FEATURES_OK: not a subset of the offered {:#x} with VERSION_1",
                    s.driver_features, device_features_);
    if (s.activated && (s.status & (kStatusDriverOk | kStatusFeaturesOk)) != (kStatusDriverOk | kStatusFeaturesOk))
        return fail("activated with device status {:#x} (DRIVER_OK and FEATURES_OK are not both set)", s.status);
    for (size_t i = 0; i < s.queues.size(); ++i) {
        const QueueState& q = s.queues[i];
        if (q.size == 0 || !std::has_single_bit(q.size) || q.size > max_queue_size_)
            return fail("queue {}: size {} is not a power of two in 1..{}", i, q.size, max_queue_size_);
        if (!vector_ok(q.msix_vector)) return fail("queue {}: MSI-X vector {} is not one of the {} vectors", i, q.msix_vector, msix_.num_vectors());
        if (q.position.has_value() != (s.activated && q.enabled))
            return fail("queue {}: {} position for a{} queue of a{} device", i, q.position ? "a" : "no",
                        q.enabled ? "n enabled" : " disabled", s.activated ? "n activated" : " stopped");
    }
    TRY(msix_.check(s.msix));
    PciConfigSpace config = [&] {
        std::lock_guard lock(state_mutex_);
        return config_;
    }();
    TRY(config.restore(s.config));
    const uint16_t control = config.u16(static_cast<uint16_t>(msix_cap_ + msix::kMessageControlOffset));

    std::lock_guard life(lifecycle_mutex_);
    bool was_active;
    {
        std::lock_guard lock(state_mutex_);
        was_active = activated_;
    }
    if (was_active) device_->reset();
    TRY(msix_.restore(s.msix, control));  // only refuses what check() did above
    {
        std::lock_guard lock(state_mutex_);
        config_ = config;
        device_feature_select_ = s.device_feature_select;
        driver_feature_select_ = s.driver_feature_select;
        driver_features_ = s.driver_features;
        config_msix_vector_ = s.config_msix_vector;
        status_ = s.status;
        config_generation_ = s.config_generation;
        isr_ = s.isr;
        activated_ = s.activated;
        queue_select_ = s.queue_select;
        for (size_t i = 0; i < queues_.size(); ++i) {
            const QueueState& q = s.queues[i];
            queues_[i] = Queue{.size = q.size, .msix_vector = q.msix_vector, .enabled = q.enabled,
                               .desc = q.desc, .driver = q.driver, .device = q.device};
        }
    }
    if (!s.activated) return {};
    QueuePositions positions;
    for (const QueueState& q : s.queues) positions.push_back(q.position);
    if (auto r = activate(&positions); !r) {
        std::lock_guard lock(state_mutex_);
        reset_transport_locked();
        return std::unexpected(context(r.error(), "the device refused its queues"));
    }
    for (uint16_t i = 0; i < num_queues_; ++i)
        if (s.queues[i].enabled) signal_queue(i);
    return {};
}

// ---- Interrupts ---------------------------------------------------------------------------

void VirtioPciDevice::signal_queue(uint16_t index) {
    uint16_t vector;
    {
        std::lock_guard lock(state_mutex_);
        if (index >= num_queues_) return;
        isr_ |= kIsrQueue;
        vector = queues_[index].msix_vector;
    }
    if (vector != kNoVector) msix_.notify(vector);
}

void VirtioPciDevice::config_changed() {
    uint16_t vector;
    {
        std::lock_guard lock(state_mutex_);
        ++config_generation_;
        isr_ |= kIsrConfig;
        vector = config_msix_vector_;
    }
    if (vector != kNoVector) msix_.notify(vector);
}

// ---- ioeventfd addresses ------------------------------------------------------------------

std::optional<uint64_t> VirtioPciDevice::bar0_address_locked() const {
    if (!config_.memory_enabled()) return std::nullopt;
    uint64_t base = config_.bar_address(kBar);
    if (base == 0) return std::nullopt;
    return base;
}

std::vector<VirtioPciDevice::NotifyAddress> VirtioPciDevice::notify_addresses() const {
    std::lock_guard lock(state_mutex_);
    std::vector<NotifyAddress> out;
    auto base = bar0_address_locked();
    if (!base) return out;
    for (uint16_t q = 0; q < num_queues_; ++q)
        out.push_back({GuestAddress(*base + kNotifyOffset + uint64_t{q} * kNotifyOffMultiplier), q});
    return out;
}

}  // namespace kestrel
