#include "devices/legacy/ioapic.hpp"

#include <algorithm>

namespace kestrel {
namespace {

constexpr uint64_t kRegisterSelect = 0x00;
constexpr uint64_t kRegisterWindow = 0x10;
constexpr uint8_t kIdRegister = 0x00;
constexpr uint8_t kVersionRegister = 0x01;
constexpr uint8_t kArbitrationRegister = 0x02;
constexpr uint8_t kFirstRedirection = 0x10;
// 82093AA: version 0x11, maximum redirection entry (pins - 1) in bits 16-23.
constexpr uint32_t kVersion = 0x11 | (uint32_t{IoApic::kPins - 1} << 16);
constexpr uint32_t kIdMask = 0x0f00'0000;
constexpr uint64_t kReadOnlyBits = IoApic::kDeliveryStatus | IoApic::kRemoteIrr;
constexpr uint64_t kLowWritable = 0x0001'ffff & ~kReadOnlyBits;  // vector .. mask
constexpr uint64_t kDestinationMask = 0xffull << 56;
constexpr uint64_t kNotRouted = ~0ull;  // no message has the upper address bits set

uint32_t load(std::span<const uint8_t> data) {
    uint32_t v = 0;
    for (size_t i = 0; i < std::min<size_t>(data.size(), 4); ++i) v |= uint32_t{data[i]} << (8 * i);
    return v;
}

void store(std::span<uint8_t> data, uint32_t v) {
    for (size_t i = 0; i < data.size(); ++i) data[i] = i < 4 ? static_cast<uint8_t>(v >> (8 * i)) : 0;
}

// SDM vol. 3A §10.11.1 (address) and §10.11.2 (data): the MSI an entry stands for.
uint64_t message_of(uint64_t rte) {
    const uint64_t dest = (rte >> 56) & 0xff;
    const uint32_t address = 0xfee0'0000u | static_cast<uint32_t>(dest << 12) |
                             ((rte & IoApic::kDestModeLogical) ? 1u << 2 : 0u);
    const auto delivery_mode = static_cast<uint32_t>((rte >> 8) & 0x7);
    uint32_t data = static_cast<uint32_t>(rte & IoApic::kVectorMask) | (delivery_mode << 8);
    if (rte & IoApic::kLevelTriggered) data |= (1u << 15) | (1u << 14);  // level, asserted
    return (uint64_t{address} << 32) | data;
}

class PinLine final : public InterruptLine {
public:
    PinLine(std::shared_ptr<IoApic> ioapic, uint8_t pin) : ioapic_(std::move(ioapic)), pin_(pin) {}
    void set_level(bool asserted) override { ioapic_->set_level(pin_, asserted); }

private:
    std::shared_ptr<IoApic> ioapic_;
    uint8_t pin_;
};

}  // namespace

IoApic::IoApic(std::shared_ptr<IoApicSink> sink) : sink_(std::move(sink)) {
    rte_.fill(kMasked);  // reset state: every entry masked (82093AA §3.2.4)
    message_.fill(kNotRouted);
}

void IoApic::read(uint64_t offset, std::span<uint8_t> data) {
    std::lock_guard lk(mu_);
    if (offset == kRegisterSelect) store(data, select_);
    else if (offset == kRegisterWindow) store(data, read_register_locked(select_));
    else store(data, 0);
}

void IoApic::write(uint64_t offset, std::span<const uint8_t> data) {
    std::lock_guard lk(mu_);
    if (offset == kRegisterSelect) select_ = static_cast<uint8_t>(load(data));
    else if (offset == kRegisterWindow) write_register_locked(select_, load(data));
}

uint32_t IoApic::read_register_locked(uint8_t index) const {
    switch (index) {
    case kIdRegister: return id_;
    case kVersionRegister: return kVersion;
    case kArbitrationRegister: return id_;
    default: break;
    }
    if (index < kFirstRedirection || index >= kFirstRedirection + 2 * kPins) return 0;
    const uint64_t rte = rte_[(index - kFirstRedirection) / 2];
    return static_cast<uint32_t>((index & 1) ? rte >> 32 : rte);
}

void IoApic::write_register_locked(uint8_t index, uint32_t value) {
    if (index == kIdRegister) {
        id_ = value & kIdMask;
        return;
    }
    if (index < kFirstRedirection || index >= kFirstRedirection + 2 * kPins) return;
    const auto pin = static_cast<uint8_t>((index - kFirstRedirection) / 2);
    uint64_t& rte = rte_[pin];
    if (index & 1) {
        rte = (rte & ~kDestinationMask) | ((uint64_t{value} << 32) & kDestinationMask);
    } else {
        rte = (rte & ~kLowWritable) | (value & kLowWritable);
        if (!(rte & kLevelTriggered)) rte &= ~kRemoteIrr;
    }
    reconfigure_locked(pin);
    service_locked(pin);
}

void IoApic::reconfigure_locked(uint8_t pin) {
    const uint64_t msg = message_of(rte_[pin]);
    if (msg == message_[pin]) return;
    message_[pin] = msg;
    sink_->route(pin, msg >> 32, static_cast<uint32_t>(msg));
}

void IoApic::service_locked(uint8_t pin) {
    uint64_t& rte = rte_[pin];
    if (rte & kMasked) return;
    if (rte & kLevelTriggered) {
        if (!level_[pin] || (rte & kRemoteIrr)) return;
        rte |= kRemoteIrr;  // until the guest EOIs the vector
    } else {
        if (!pending_[pin]) return;
        pending_[pin] = false;
    }
    // Every entry write routes its message first, so message_ is the current entry's.
    sink_->deliver(message_[pin] >> 32, static_cast<uint32_t>(message_[pin]));
}

void IoApic::set_level(uint8_t pin, bool asserted) {
    if (pin >= kPins) return;
    std::lock_guard lk(mu_);
    if (asserted && !level_[pin]) pending_[pin] = true;  // rising edge
    level_[pin] = asserted;
    if (!asserted && (rte_[pin] & kLevelTriggered)) pending_[pin] = false;
    if (asserted) service_locked(pin);
}

void IoApic::end_of_interrupt(uint8_t vector) {
    std::lock_guard lk(mu_);
    for (uint8_t pin = 0; pin < kPins; ++pin) {
        uint64_t& rte = rte_[pin];
        if ((rte & kVectorMask) != vector || !(rte & kLevelTriggered) || !(rte & kRemoteIrr)) continue;
        rte &= ~kRemoteIrr;
        service_locked(pin);  // still asserted: deliver again
    }
}

IoApic::State IoApic::save() const {
    std::lock_guard lk(mu_);
    return State{.select = select_, .id = id_, .redirection = rte_, .level = level_, .irr = pending_};
}

Result<void> IoApic::restore(const State& s) {
    if (s.id & ~kIdMask) return bad_request("ioapic: id {:#010x} has bits outside 24..27 set", s.id);
    // Remote IRR is the device's own bit (read-only to the guest), kept only while level
    // triggered; delivery status (bit 12) never reads 1 here: delivery is immediate.
    constexpr uint64_t kStorable = kLowWritable | kRemoteIrr | kDestinationMask;
    for (uint8_t pin = 0; pin < kPins; ++pin) {
        const uint64_t rte = s.redirection[pin];
        if (rte & ~kStorable)
            return bad_request("ioapic: redirection[{}] {:#018x} has reserved or delivery status bits set ({:#x})",
                               pin, rte, rte & ~kStorable);
        if ((rte & kRemoteIrr) && !(rte & kLevelTriggered))
            return bad_request("ioapic: redirection[{}] {:#018x} has Remote IRR set on an edge-triggered entry", pin,
                               rte);
    }
    std::lock_guard lk(mu_);
    select_ = s.select;
    id_ = s.id;
    rte_ = s.redirection;
    level_ = s.level;
    pending_ = s.irr;
    for (uint8_t pin = 0; pin < kPins; ++pin) {
        // An entry still at its reset value on a pin never routed stays unrouted, as on the
        // device that was saved: masked, it cannot deliver, and its first write routes it.
        if (rte_[pin] != kMasked || message_[pin] != kNotRouted) reconfigure_locked(pin);
        service_locked(pin);
    }
    return {};
}

std::shared_ptr<InterruptLine> ioapic_line(std::shared_ptr<IoApic> ioapic, uint8_t pin) {
    return std::make_shared<PinLine>(std::move(ioapic), pin);
}

uint64_t IoApic::redirection_entry(uint8_t pin) const {
    std::lock_guard lk(mu_);
    return pin < kPins ? rte_[pin] : 0;
}

}  // namespace kestrel
