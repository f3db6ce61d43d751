// The guest-physical layout of a kestrel x86-64 VM: where boot structures, RAM, the MMIO
// hole and fixed devices live. One place, so loaders, ACPI tables, page tables and the
// device wiring agree. Sizes in bytes.
#pragma once

#include <cstdint>

namespace kestrel::x86 {

// Low memory (below 1 MiB) used by the VMM for boot structures.
inline constexpr uint64_t kGdtAddr = 0x500;         // 5 descriptors (0x500..0x527)
inline constexpr uint64_t kIdtAddr = 0x540;         // empty IDT (limit 0)
inline constexpr uint64_t kPvhStartInfo = 0x6000;   // hvm_start_info + memmap (PVH)
inline constexpr uint64_t kZeroPage = 0x7000;       // Linux boot_params
inline constexpr uint64_t kBootStack = 0x8ff0;      // initial RSP/ESP
inline constexpr uint64_t kPml4 = 0x9000;           // identity page tables for 64-bit entry:
inline constexpr uint64_t kPdpt = 0xa000;           //   PML4 -> PDPT -> 4 PDs of 2 MiB pages,
inline constexpr uint64_t kPd = 0xb000;             //   covering 0..4 GiB (0xb000..0xefff)
inline constexpr uint64_t kCmdline = 0x20000;       // kernel command line
inline constexpr uint64_t kCmdlineMax = 0x10000;    // VMM's own cap; the kernel's may be lower
inline constexpr uint64_t kEbdaStart = 0x9fc00;     // RAM [0, kEbdaStart) is usable
inline constexpr uint64_t kAcpiStart = 0xe0000;     // RSDP (in the BIOS scan area) and tables
inline constexpr uint64_t kAcpiEnd = 0x100000;
inline constexpr uint64_t kHighMemStart = 0x100000; // RAM above 1 MiB

// RAM above kMmioHoleStart is placed at 4 GiB instead.
inline constexpr uint64_t kMmioHoleStart = 0xc000'0000;
inline constexpr uint64_t kMmioHoleEnd = 0x1'0000'0000;
inline constexpr uint64_t kPciMmio32Start = 0xc000'0000;  // 32-bit PCI BAR window
inline constexpr uint64_t kPciMmio32Size = 0x2000'0000;
inline constexpr uint64_t kPciEcamStart = 0xe000'0000;    // PCIe ECAM, bus 0 only
inline constexpr uint64_t kPciEcamSize = 0x10'0000;
inline constexpr uint64_t kIoapicAddr = 0xfec0'0000;
inline constexpr uint64_t kLapicAddr = 0xfee0'0000;

// Port I/O.
inline constexpr uint16_t kCom1Port = 0x3f8;
inline constexpr uint8_t kCom1Irq = 4;
inline constexpr uint16_t kI8042DataPort = 0x60;     // 0x60..0x64, status/command at 0x64
inline constexpr uint8_t kI8042KbdIrq = 1;           // ISA IRQ 1: the keyboard
inline constexpr uint16_t kCmosPort = 0x70;          // 0x70 index, 0x71 data
inline constexpr uint16_t kDebugExitPort = 0xf4;     // same as QEMU's isa-debug-exit default
inline constexpr uint16_t kAcpiSleepControlPort = 0x600;  // FADT SLEEP_CONTROL_REG (1 byte)
inline constexpr uint16_t kAcpiSleepStatusPort = 0x601;   // FADT SLEEP_STATUS_REG (1 byte)
inline constexpr uint16_t kAcpiResetPort = 0x602;         // FADT RESET_REG (1 byte)
inline constexpr uint8_t kAcpiResetValue = 0x1;
inline constexpr uint8_t kAcpiS5SleepType = 5;      // _S5_ SLP_TYP written to SLEEP_CONTROL
inline constexpr uint16_t kPciConfigPort = 0xcf8;   // 0xcf8 address, 0xcfc..0xcff data
inline constexpr uint8_t kTimerGsi = 2;             // ISA IRQ0 -> IOAPIC pin 2 (MADT ISO)

}  // namespace kestrel::x86
