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

private:
    enum class Action { kNone, kPowerOff, kReset };
    Action write_register(uint64_t offset, uint8_t value);  // mutex_ held

    const std::function<void()> on_poweroff_;
    const std::function<void()> on_reset_;
    std::mutex mutex_;
    bool wake_status_ = false;
};

}  // namespace kestrel
