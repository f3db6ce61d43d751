#include "devices/legacy/cmos_rtc.hpp"

#include <algorithm>

#include "vmm/base/log.hpp"

namespace kestrel {

namespace {

// MC146818 register indices (datasheet "Address Map") and the PC's CMOS RAM bytes.
enum class Index : uint8_t {
    kSeconds = 0x00,
    kMinutes = 0x02,
    kHours = 0x04,
    kDayOfWeek = 0x06,
    kDayOfMonth = 0x07,
    kMonth = 0x08,
    kYear = 0x09,
    kRegA = 0x0a,
    kRegB = 0x0b,
    kRegC = 0x0c,
    kRegD = 0x0d,
    kBaseMemLow = 0x15,
    kBaseMemHigh = 0x16,
    kExtMemLow = 0x17,
    kExtMemHigh = 0x18,
    kExtMem2Low = 0x30,
    kExtMem2High = 0x31,
    kCentury = 0x32,  // the index FADT.CENTURY names; Linux reads it when the FADT says so
    kMemAbove16mLow = 0x34,
    kMemAbove16mHigh = 0x35,
    kMemAbove4gLow = 0x5b,
    kMemAbove4gMid = 0x5c,
    kMemAbove4gHigh = 0x5d,
};

constexpr uint8_t kIndexMask = 0x7f;  // bit 7 of port 0x70 is the NMI mask

constexpr uint8_t kRegAUpdateInProgress = 0x80;
constexpr uint8_t kRegADefault = 0x26;  // 32.768 kHz time base, 1.024 kHz periodic rate
constexpr uint8_t kRegBSet = 0x80;      // updates halted while set
constexpr uint8_t kRegBBinary = 0x04;   // DM
constexpr uint8_t kRegB24Hour = 0x02;
constexpr uint8_t kRegBDefault = kRegB24Hour;  // BCD, 24-hour: what PC firmware uses
constexpr uint8_t kRegDValidRamAndTime = 0x80;
constexpr uint8_t kHourPm = 0x80;

constexpr long kUpdateCycleNs = 244'000;  // tBUC
constexpr uint64_t kKiB = 1024;
constexpr uint64_t k64KiB = 64 * kKiB;
constexpr uint64_t kMiB = 1024 * kKiB;

constexpr uint8_t idx(Index i) { return static_cast<uint8_t>(i); }

void store_le(std::array<uint8_t, 128>& ram, Index first, uint64_t value, unsigned bytes) {
    for (unsigned i = 0; i < bytes; ++i) ram[idx(first) + i] = static_cast<uint8_t>(value >> (8 * i));
}

bool is_time_register(uint8_t index) {
    switch (static_cast<Index>(index)) {
    case Index::kSeconds:
    case Index::kMinutes:
    case Index::kHours:
    case Index::kDayOfWeek:
    case Index::kDayOfMonth:
    case Index::kMonth:
    case Index::kYear:
    case Index::kCentury:
        return true;
    default:
        return false;
    }
}

}  // namespace

CmosRtc::CmosRtc(CmosMemorySizes memory, Clock clock) : clock_(std::move(clock)) {
    ram_[idx(Index::kRegA)] = kRegADefault;
    ram_[idx(Index::kRegB)] = kRegBDefault;
    ram_[idx(Index::kRegD)] = kRegDValidRamAndTime;

    const uint64_t below = memory.ram_below_4g;
    const uint64_t base_kib = std::min<uint64_t>(below / kKiB, 640);
    store_le(ram_, Index::kBaseMemLow, base_kib, 2);
    const uint64_t ext_kib = below > kMiB ? std::min<uint64_t>((below - kMiB) / kKiB, 0xffff) : 0;
    store_le(ram_, Index::kExtMemLow, ext_kib, 2);
    store_le(ram_, Index::kExtMem2Low, ext_kib, 2);
    const uint64_t above_16m = below > 16 * kMiB ? std::min<uint64_t>((below - 16 * kMiB) / k64KiB, 0xffff) : 0;
    store_le(ram_, Index::kMemAbove16mLow, above_16m, 2);
    const uint64_t above_4g = std::min<uint64_t>(memory.ram_above_4g / k64KiB, 0xff'ffff);
    store_le(ram_, Index::kMemAbove4gLow, above_4g, 3);
}

bool CmosRtc::update_in_progress(long nanoseconds_into_second) {
    return nanoseconds_into_second >= 1'000'000'000 - kUpdateCycleNs;
}

void CmosRtc::read(uint64_t offset, std::span<uint8_t> data) {
    std::lock_guard lock(mutex_);
    for (size_t i = 0; i < data.size(); ++i) {
        const uint64_t off = offset + i;
        if (off == 0) {
            data[i] = index_;  // write-only on a real PC; the latched index is the kindest answer
        } else if (off == 1) {
            data[i] = read_register(index_);
        } else {
            data[i] = 0xff;
        }
    }
}

void CmosRtc::write(uint64_t offset, std::span<const uint8_t> data) {
    std::lock_guard lock(mutex_);
    for (size_t i = 0; i < data.size(); ++i) {
        const uint64_t off = offset + i;
        if (off == 0) {
            index_ = data[i] & kIndexMask;
        } else if (off == 1) {
            write_register(index_, data[i]);
        }
    }
}

CmosRtc::State CmosRtc::save() const {
    std::lock_guard lock(mutex_);
    return State{.index = index_, .ram = ram_};
}

Result<void> CmosRtc::restore(const State& s) {
    // Each check refuses a byte this device never stores, so the restored RAM is one the
    // guest could have produced through ports 0x70/0x71.
    if (s.index > kIndexMask) return bad_request("cmos: index {:#x} is beyond the 128-byte RAM", s.index);
    if (const uint8_t a = s.ram[idx(Index::kRegA)]; a & kRegAUpdateInProgress)
        return bad_request("cmos: ram[0x0a] (register A) {:#04x} has UIP set; UIP is read-only and derived "
                           "from the clock", a);
    if (const uint8_t d = s.ram[idx(Index::kRegD)]; d != kRegDValidRamAndTime)
        return bad_request("cmos: ram[0x0d] (register D) is {:#04x}, not {:#04x} (read-only, VRT only)", d,
                           kRegDValidRamAndTime);
    for (unsigned i = 0; i < s.ram.size(); ++i) {
        if (is_time_register(static_cast<uint8_t>(i)) && s.ram[i] != 0)
            return bad_request("cmos: ram[{:#04x}] is a time register and must be 0 (the clock supplies it), "
                               "not {:#04x}", i, s.ram[i]);
    }
    std::lock_guard lock(mutex_);
    index_ = s.index;
    ram_ = s.ram;
    return {};
}

uint8_t CmosRtc::encode(unsigned value) const {
    if (ram_[idx(Index::kRegB)] & kRegBBinary) return static_cast<uint8_t>(value);
    return static_cast<uint8_t>(((value / 10) % 10) << 4 | (value % 10));
}

uint8_t CmosRtc::encode_hour(unsigned hour) const {
    if (ram_[idx(Index::kRegB)] & kRegB24Hour) return encode(hour);
    // 12-hour mode: 1..12 with bit 7 set for PM (datasheet, "Time, Calendar and Alarm").
    const unsigned h12 = hour % 12 == 0 ? 12 : hour % 12;
    return static_cast<uint8_t>(encode(h12) | (hour >= 12 ? kHourPm : 0));
}

uint8_t CmosRtc::read_register(uint8_t index) {
    if (index == idx(Index::kRegA)) {
        uint8_t a = ram_[index] & static_cast<uint8_t>(~kRegAUpdateInProgress);
        if (!clock_ && !(ram_[idx(Index::kRegB)] & kRegBSet)) {
            struct timespec now {};
            ::clock_gettime(CLOCK_REALTIME, &now);
            if (update_in_progress(now.tv_nsec)) a |= kRegAUpdateInProgress;
        }
        return a;
    }
    if (index == idx(Index::kRegC)) {
        const uint8_t c = ram_[index];
        ram_[index] = 0;  // reading C acknowledges its flags
        return c;
    }
    if (index == idx(Index::kRegD)) return kRegDValidRamAndTime;
    if (!is_time_register(index)) return ram_[index];

    const time_t now = clock_ ? clock_() : ::time(nullptr);
    struct tm t {};
    if (::gmtime_r(&now, &t) == nullptr) return 0;
    const unsigned year = static_cast<unsigned>(t.tm_year + 1900);
    switch (static_cast<Index>(index)) {
    case Index::kSeconds:
        return encode(static_cast<unsigned>(std::min(t.tm_sec, 59)));  // no leap second register
    case Index::kMinutes:
        return encode(static_cast<unsigned>(t.tm_min));
    case Index::kHours:
        return encode_hour(static_cast<unsigned>(t.tm_hour));
    case Index::kDayOfWeek:
        return encode(static_cast<unsigned>(t.tm_wday + 1));  // 1 = Sunday
    case Index::kDayOfMonth:
        return encode(static_cast<unsigned>(t.tm_mday));
    case Index::kMonth:
        return encode(static_cast<unsigned>(t.tm_mon + 1));
    case Index::kYear:
        return encode(year % 100);
    case Index::kCentury:
        return encode((year / 100) % 100);
    default:
        return 0;
    }
}

void CmosRtc::write_register(uint8_t index, uint8_t value) {
    if (is_time_register(index)) {
        log::debug("cmos: write {:#x} to time register {:#x} ignored (host clock is authoritative)",
                   value, index);
        return;
    }
    if (index == idx(Index::kRegA)) {
        ram_[index] = value & static_cast<uint8_t>(~kRegAUpdateInProgress);  // UIP is read-only
        return;
    }
    if (index == idx(Index::kRegD)) return;  // read-only
    ram_[index] = value;
}

}  // namespace kestrel
