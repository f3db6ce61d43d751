// Fixed ACPI Description Table (ACPI 6.5 §5.2.9), revision 6, for a HW-reduced ACPI platform
// (§4.1): no PM1/GPE/PM-timer blocks, no SCI, no FACS; power-off goes through the sleep
// control register (§4.8.3.7) and reboot through the reset register (§4.8.3.6).
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "boot/acpi/sdt.hpp"
#include "vmm/base/error.hpp"

namespace kestrel::acpi {

// §5.2.9 FADT format. Fields a HW-reduced OSPM ignores (offsets 46..107 and 148..232) stay zero.
struct [[gnu::packed]] Fadt {
    SdtHeader header;                 // 0: "FACP"
    uint32_t firmware_ctrl;           // 36: FACS, none
    uint32_t dsdt;                    // 40: 0, X_DSDT is used
    uint8_t reserved0;                // 44
    uint8_t preferred_pm_profile;     // 45
    uint16_t sci_int;                 // 46
    uint32_t smi_cmd;                 // 48
    uint8_t acpi_enable;              // 52
    uint8_t acpi_disable;             // 53
    uint8_t s4bios_req;               // 54
    uint8_t pstate_cnt;               // 55
    uint32_t pm1a_evt_blk;            // 56
    uint32_t pm1b_evt_blk;            // 60
    uint32_t pm1a_cnt_blk;            // 64
    uint32_t pm1b_cnt_blk;            // 68
    uint32_t pm2_cnt_blk;             // 72
    uint32_t pm_tmr_blk;              // 76
    uint32_t gpe0_blk;                // 80
    uint32_t gpe1_blk;                // 84
    uint8_t pm1_evt_len;              // 88
    uint8_t pm1_cnt_len;              // 89
    uint8_t pm2_cnt_len;              // 90
    uint8_t pm_tmr_len;               // 91
    uint8_t gpe0_blk_len;             // 92
    uint8_t gpe1_blk_len;             // 93
    uint8_t gpe1_base;                // 94
    uint8_t cst_cnt;                  // 95
    uint16_t p_lvl2_lat;              // 96
    uint16_t p_lvl3_lat;              // 98
    uint16_t flush_size;              // 100
    uint16_t flush_stride;            // 102
    uint8_t duty_offset;              // 104
    uint8_t duty_width;               // 105
    uint8_t day_alrm;                 // 106
    uint8_t mon_alrm;                 // 107
    uint8_t century;                  // 108
    uint16_t iapc_boot_arch;          // 109: §5.2.9.3
    uint8_t reserved1;                // 111
    uint32_t flags;                   // 112: fixed feature flags
    Gas reset_reg;                    // 116
    uint8_t reset_value;              // 128
    uint16_t arm_boot_arch;           // 129
    uint8_t fadt_minor_version;       // 131
    uint64_t x_firmware_ctrl;         // 132
    uint64_t x_dsdt;                  // 140
    Gas x_pm1a_evt_blk;               // 148
    Gas x_pm1b_evt_blk;               // 160
    Gas x_pm1a_cnt_blk;               // 172
    Gas x_pm1b_cnt_blk;               // 184
    Gas x_pm2_cnt_blk;                // 196
    Gas x_pm_tmr_blk;                 // 208
    Gas x_gpe0_blk;                   // 220
    Gas x_gpe1_blk;                   // 232
    Gas sleep_control_reg;            // 244
    Gas sleep_status_reg;             // 256
    uint64_t hypervisor_vendor_id;    // 268
};
static_assert(sizeof(Fadt) == 276);
static_assert(offsetof(Fadt, iapc_boot_arch) == 109);
static_assert(offsetof(Fadt, flags) == 112);
static_assert(offsetof(Fadt, x_dsdt) == 140);
static_assert(offsetof(Fadt, sleep_control_reg) == 244);
static_assert(offsetof(Fadt, hypervisor_vendor_id) == 268);

inline constexpr uint8_t kFadtRevision = 6;
inline constexpr uint8_t kFadtMinorVersion = 5;  // ACPI 6.5; the layout is unchanged since 6.0

// §5.2.9 Fixed ACPI Description Table Fixed Feature Flags.
inline constexpr uint32_t kFadtWbinvd = 1u << 0;
inline constexpr uint32_t kFadtPwrButton = 1u << 4;  // 1: no fixed-feature power button
inline constexpr uint32_t kFadtSlpButton = 1u << 5;  // 1: no fixed-feature sleep button
inline constexpr uint32_t kFadtResetRegSup = 1u << 10;
inline constexpr uint32_t kFadtHwReducedAcpi = 1u << 20;

// §5.2.9.3 IA-PC Boot Architecture Flags.
inline constexpr uint16_t kBootArch8042 = 1u << 1;  // a port 0x60/0x64 keyboard controller
inline constexpr uint16_t kBootArchVgaNotPresent = 1u << 2;
inline constexpr uint16_t kBootArchMsiNotSupported = 1u << 3;
// Set, Linux drops its rtc_cmos platform device (x86_platform.legacy.rtc = 0) and the RTC is
// reached only through \_SB.RTC; kestrel has the CMOS RTC, so it stays clear.
inline constexpr uint16_t kBootArchCmosRtcNotPresent = 1u << 5;

// §5.2.9 CENTURY: the CMOS RAM index of the century byte, the one a PC BIOS uses and
// devices/legacy/cmos_rtc serves. Linux's mc146818_get_time reads it when this is non-zero.
inline constexpr uint8_t kCmosCenturyIndex = 0x32;

Result<std::vector<uint8_t>> build_fadt(uint64_t dsdt_address);

}  // namespace kestrel::acpi
