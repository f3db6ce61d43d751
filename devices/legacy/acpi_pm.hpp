// AcpiPmDevice: the hardware-reduced ACPI power-management registers named by the FADT
// (ACPI 6.x §4.8.3.7 Sleep Control Register, §4.8.3.8 Sleep Status Register, §4.8.3.6
// Reset Register), each one byte wide, mapped at x86::kAcpiSleepControlPort with length 3:
//   offset 0  SLEEP_CONTROL_REG  (x86::kAcpiSleepControlPort)  write-only, reads 0
//   offset 1  SLEEP_STATUS_REG   (x86::kAcpiSleepStatusPort)   WAK_STS, write 1 to clear
//   offset 2  RESET_REG          (x86::kAcpiResetPort)         write-only, reads 0
// SLP_EN with SLP_TYP == x86::kAcpiS5SleepType powers off; writing x86::kAcpiResetValue to
// the reset register resets. Other sleep states are not implemented: the request is logged
// and WAK_STS is set at once, so a guest polling for wake-up (as ACPICA's
// acpi_hw_extended_sleep does for S1..S4) sees an immediate wake instead of hanging.
// Callbacks run on the writing vCPU's thread with no lock held.
#pragma once

#include <cstdint>
#include <functional>
#include <mutex>
#include <span>

#include "devices/bus_device.hpp"
#include "vmm/base/error.hpp"

namespace kestrel {

class AcpiPmDevice final : public BusDevice {
public:
    static constexpr uint64_t kSleepControlOffset = 0;
    static constexpr uint64_t kSleepStatusOffset = 1;
    static constexpr uint64_t kResetOffset = 2;
    static constexpr uint64_t kMappingLength = 3;

    AcpiPmDevice(std::function<void()> on_poweroff, std::function<void()> on_reset);

    void read(uint64_t offset, std::span<uint8_t> data) override;
    void write(uint64_t offset, std::span<const uint8_t> data) override;

    // The registers' guest-visible state, for snapshots and live migration. The sleep control
    // and reset registers are write-only and act at once (ACPI 6.x §4.8.3.6/§4.8.3.7), so
    // only WAK_STS in the sleep status register (§4.8.3.8) persists between accesses. There
    // are no enable bits: hardware-reduced ACPI has no PM1 event block here, and no SCI.
    // Deliberately not held: the power-off and reset callbacks (host wiring).
    struct State {
        bool wake_status = false;  // WAK_STS

        bool operator==(const State&) const = default;
    };
    State save() const;
    // Nothing in the state has a domain to check (one bool), so this never fails; it returns
    // Result for the same shape as the other devices. Never calls the callbacks.
    Result<void> restore(const State& s);

private:
    enum class Action { kNone, kPowerOff, kReset };
    Action write_register(uint64_t offset, uint8_t value);  // mutex_ held

    const std::function<void()> on_poweroff_;
    const std::function<void()> on_reset_;
    mutable std::mutex mutex_;
    bool wake_status_ = false;
};

}  // namespace kestrel
