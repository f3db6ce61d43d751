// A vCPU's state and the VM's kvm-clock in the state stream (migration/state_stream.hpp),
// as KVM hands them out: the register blocks are KVM's own structs (x86-64 uapi, fixed
// layout, little-endian), each written as u32 size + bytes so that a file from a kernel whose
// struct differs is refused by name instead of misread.
//
// Section "vcpu/N", version 1, fields in the order KVM needs them back (Firecracker's and
// QEMU's order: CPUID, MP_STATE, REGS, SREGS, XSAVE, XCRS, DEBUGREGS, LAPIC after SREGS (APIC
// base), MSRs sorted by index (IA32_TSC 0x10 before TSC_DEADLINE 0x6e0), VCPU_EVENTS last):
//   cpuid u32 count (<= kMaxCpuidEntries) then count x (function, index, flags, eax, ebx, ecx,
//     edx: u32 each), what KVM_SET_CPUID2 was given,
//   mp_state kvm_mp_state, regs kvm_regs, sregs kvm_sregs, xsave 4096-byte legacy area,
//   xcrs kvm_xcrs, debugregs kvm_debugregs, lapic kvm_lapic_state,
//   msrs u32 count (<= kMaxMsrs) then count x (u32 index, u64 value),
//   events kvm_vcpu_events
// Section "kvm-clock", version 2: clock u64 (ns, KVM_GET_CLOCK), realtime u64 (the host's
//   CLOCK_REALTIME in ns at that reading when KVM gave it, flag KVM_CLOCK_REALTIME, else 0;
//   KVM only does on hosts whose clocksource is the TSC). Version 1 (clock alone) is read too.
//   A live migration's destination hands both back with KVM_CLOCK_REALTIME where its KVM
//   takes the flag, so the guest's clock also counts the time the VM was away (KVM never
//   steps it backwards: api.rst 4.30 KVM_SET_CLOCK); a snapshot's restore does not (its
//   guest would see the whole time the file sat on disk pass at once).
// Section "kvm-irqchip", version 1 (only with --pit: KVM's own PIC, IOAPIC and i8254):
//   pic_master kvm_irqchip, pic_slave kvm_irqchip, ioapic kvm_irqchip (KVM_GET_IRQCHIP with
//   chip_id 0, 1, 2; the chip_id is checked), pit kvm_pit_state2 (KVM_GET_PIT2).
// CPUID is held to be compared, not set: a restoring kestrel derives its own from the
// configuration and its host, and refuses a snapshot whose CPUID differs (a guest that saw
// features this host lacks would fault on them).
// What the values mean is KVM's to check: restoring a refused value is an error naming the
// ioctl, and the caller puts back what was there.
#pragma once

#include <linux/kvm.h>

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "migration/state_stream.hpp"
#include "vmm/base/error.hpp"

namespace kestrel::migration {

inline constexpr uint32_t kVcpuStateVersion = 1;
inline constexpr uint32_t kKvmClockVersion = 2;
inline constexpr const char* kKvmClockSection = "kvm-clock";
inline constexpr uint32_t kMaxMsrs = 4096;
inline constexpr uint32_t kMaxCpuidEntries = 1024;

std::string vcpu_section(uint32_t index);  // "vcpu/N"

struct VcpuState {
    std::vector<kvm_cpuid_entry2> cpuid;
    kvm_mp_state mp_state{};
    kvm_regs regs{};
    kvm_sregs sregs{};
    std::array<uint32_t, 1024> xsave{};  // the legacy 4 KiB XSAVE area (KVM_GET_XSAVE)
    kvm_xcrs xcrs{};
    kvm_debugregs debugregs{};
    kvm_lapic_state lapic{};
    std::vector<kvm_msr_entry> msrs;  // sorted by index
    kvm_vcpu_events events{};
};

void encode(Encoder& e, const VcpuState& s);
Result<VcpuState> decode_vcpu(const Section& s);
// Empty when `saved` and `mine` list the same leaves with the same values (order aside), else
// the first difference in words ("leaf 0x7 index 0: ebx 0x... saved, 0x... here").
std::string cpuid_difference(const std::vector<kvm_cpuid_entry2>& saved, const std::vector<kvm_cpuid_entry2>& mine);

struct KvmClockState {
    uint64_t clock_ns = 0;
    uint64_t realtime_ns = 0;  // 0: KVM gave no KVM_CLOCK_REALTIME reading
    bool operator==(const KvmClockState&) const = default;
};
void encode_kvm_clock(Encoder& e, const KvmClockState& c);
Result<KvmClockState> decode_kvm_clock(const Section& s);

inline constexpr uint32_t kKvmIrqchipVersion = 1;
inline constexpr const char* kKvmIrqchipSection = "kvm-irqchip";
struct KvmIrqchipState {
    std::array<kvm_irqchip, 3> chips{};  // index = chip_id: PIC master, PIC slave, IOAPIC
    kvm_pit_state2 pit{};
};
void encode(Encoder& e, const KvmIrqchipState& s);
Result<KvmIrqchipState> decode_kvm_irqchip(const Section& s);

}  // namespace kestrel::migration
