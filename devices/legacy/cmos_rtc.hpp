// CmosRtc: the Motorola MC146818 real-time clock plus the PC's CMOS RAM, at ports 0x70
// (index; bit 7 is the NMI mask, ignored) and 0x71 (data): mapped at x86::kCmosPort, length 2.
//
// The time registers are not a free-running copy: every read converts the clock source
// (the host's UTC wall clock unless one is injected) honouring register B's DM (binary vs
// BCD) and 24/12-hour bits. Guest writes to the time registers are ignored (the host clock
// is the truth; Linux's NTP sync writes them every 11 minutes). Register A's UIP bit is
// set only in the last 244 us of each host second (MC146818 datasheet, "Update Cycle":
// tBUC = 244 us before the update), which keeps Linux's mc146818_get_time and
// mc146818_avoid_UIP happy; with an injected clock (whole seconds only) it is never set.
// Register D always has VRT (valid RAM and time). No alarm, periodic or update interrupts:
// there is no IRQ 8 line, and register C reads back what was written, then 0.
//
// CMOS RAM layout like a PC BIOS leaves it (the bytes SeaBIOS/QEMU fill in):
//   0x15/0x16 base memory in KiB (640), 0x17/0x18 and 0x30/0x31 extended memory above 1 MiB
//   in KiB (capped at 0xffff), 0x34/0x35 RAM between 16 MiB and the 4 GiB hole / 64 KiB,
//   0x5b..0x5d RAM above 4 GiB / 64 KiB, 0x32 century (computed like the time registers).
//
// Threads: state behind a mutex; the clock source is called with it held.
#pragma once

#include <array>
#include <cstdint>
#include <ctime>
#include <functional>
#include <mutex>
#include <span>

#include "devices/bus_device.hpp"
#include "vmm/base/error.hpp"

namespace kestrel {

struct CmosMemorySizes {
    uint64_t ram_below_4g = 0;  // bytes of RAM at [0, ram_below_4g), at most the MMIO hole start
    uint64_t ram_above_4g = 0;  // bytes of RAM at [4 GiB, 4 GiB + ram_above_4g)
};

class CmosRtc final : public BusDevice {
public:
    static constexpr uint64_t kMappingLength = 2;  // at x86::kCmosPort
    using Clock = std::function<time_t()>;

    // clock: seconds since the epoch, UTC; empty = the host's CLOCK_REALTIME.
    explicit CmosRtc(CmosMemorySizes memory, Clock clock = {});

    void read(uint64_t offset, std::span<uint8_t> data) override;
    void write(uint64_t offset, std::span<const uint8_t> data) override;

    // True in the window before the second rolls over during which an MC146818 updates.
    static bool update_in_progress(long nanoseconds_into_second);

    // The device's guest-visible state, for snapshots and live migration: the latched index
    // (port 0x70) and the 128 bytes of CMOS RAM, which hold registers A, B (the DM and 24/12
    // mode bits every time read honours), C, the alarm bytes, the memory-size bytes and
    // whatever else the guest stored.
    // Deliberately not held: a time base. The time registers are not stored anywhere (their
    // RAM bytes stay 0): every read converts the clock source, and guest writes to them are
    // ignored, so guest time is host UTC by construction and the offset between the two is
    // always 0. The destination's clock carries the guest's time on, as NTP-synced hosts
    // agree on UTC. Also not held: the clock source itself (host wiring).
    struct State {
        uint8_t index = 0;                // < 128: bit 7 of port 0x70 is the NMI mask, not stored
        std::array<uint8_t, 128> ram{};

        bool operator==(const State&) const = default;
    };
    State save() const;
    // Replaces the state with `s` after checking it (a snapshot file may be hostile): the
    // index in range, register A without UIP, register D = VRT, the time registers' bytes 0.
    // On error nothing changes. There is no IRQ 8 line, so nothing else to re-evaluate.
    Result<void> restore(const State& s);

private:
    uint8_t read_register(uint8_t index);  // mutex_ held
    void write_register(uint8_t index, uint8_t value);
    uint8_t encode(unsigned value) const;  // binary or BCD per register B
    uint8_t encode_hour(unsigned hour) const;

    const Clock clock_;
    mutable std::mutex mutex_;
    uint8_t index_ = 0;
    std::array<uint8_t, 128> ram_{};
};

}  // namespace kestrel
