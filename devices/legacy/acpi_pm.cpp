#include "devices/legacy/acpi_pm.hpp"

#include "boot/x86_layout.hpp"
#include "vmm/base/log.hpp"

namespace kestrel {

namespace {

// ACPI 6.x §4.8.3.7 Table "Sleep Control Register": SLP_TYP bits 4:2, SLP_EN bit 5.
constexpr uint8_t kSleepTypeMask = 0x1c;
constexpr unsigned kSleepTypeShift = 2;
constexpr uint8_t kSleepEnable = 0x20;
// §4.8.3.8 Table "Sleep Status Register": WAK_STS bit 7.
constexpr uint8_t kWakeStatus = 0x80;

static_assert(x86::kAcpiSleepStatusPort - x86::kAcpiSleepControlPort == AcpiPmDevice::kSleepStatusOffset);
static_assert(x86::kAcpiResetPort - x86::kAcpiSleepControlPort == AcpiPmDevice::kResetOffset);

}  // namespace

AcpiPmDevice::AcpiPmDevice(std::function<void()> on_poweroff, std::function<void()> on_reset)
    : on_poweroff_(std::move(on_poweroff)), on_reset_(std::move(on_reset)) {}

void AcpiPmDevice::read(uint64_t offset, std::span<uint8_t> data) {
    std::lock_guard lock(mutex_);
    for (size_t i = 0; i < data.size(); ++i) {
        data[i] = (offset + i == kSleepStatusOffset && wake_status_) ? kWakeStatus : 0;
    }
}

void AcpiPmDevice::write(uint64_t offset, std::span<const uint8_t> data) {
    Action action = Action::kNone;
    {
        std::lock_guard lock(mutex_);
        for (size_t i = 0; i < data.size() && action == Action::kNone; ++i) {
            action = write_register(offset + i, data[i]);
        }
    }
    if (action == Action::kPowerOff && on_poweroff_) on_poweroff_();
    if (action == Action::kReset && on_reset_) on_reset_();
}

AcpiPmDevice::State AcpiPmDevice::save() const {
    std::lock_guard lock(mutex_);
    return State{.wake_status = wake_status_};
}

Result<void> AcpiPmDevice::restore(const State& s) {
    std::lock_guard lock(mutex_);
    wake_status_ = s.wake_status;
    return {};
}

AcpiPmDevice::Action AcpiPmDevice::write_register(uint64_t offset, uint8_t value) {
    switch (offset) {
    case kSleepControlOffset: {
        if (!(value & kSleepEnable)) return Action::kNone;  // SLP_TYP alone does nothing
        const unsigned sleep_type = (value & kSleepTypeMask) >> kSleepTypeShift;
        if (sleep_type == x86::kAcpiS5SleepType) return Action::kPowerOff;
        log::debug("acpi-pm: sleep type {} requested, not supported; waking at once", sleep_type);
        wake_status_ = true;
        return Action::kNone;
    }
    case kSleepStatusOffset:
        if (value & kWakeStatus) wake_status_ = false;
        return Action::kNone;
    case kResetOffset:
        if (value == x86::kAcpiResetValue) return Action::kReset;
        log::debug("acpi-pm: reset register write {:#x} ignored", value);
        return Action::kNone;
    default:
        log::debug("acpi-pm: write {:#x} to offset {} ignored", value, offset);
        return Action::kNone;
    }
}

}  // namespace kestrel
