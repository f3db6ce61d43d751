#include "vmm/arch/x86/vcpu_setup.hpp"

#include <array>

#include "boot/x86_layout.hpp"

namespace kestrel::x86 {

namespace {

// MSR numbers: Intel SDM vol. 4 / AMD APM vol. 2 appendix A.
enum class Msr : uint32_t {
    Tsc = 0x10,
    SysenterCs = 0x174,
    SysenterEsp = 0x175,
    SysenterEip = 0x176,
    MiscEnable = 0x1a0,
    MtrrDefType = 0x2ff,
    Star = 0xc0000081,
    Lstar = 0xc0000082,
    Cstar = 0xc0000083,
    SyscallMask = 0xc0000084,
    KernelGsBase = 0xc0000102,
};
constexpr uint64_t kMiscEnableFastString = 1;
constexpr uint64_t kMtrrEnableWriteBack = (1u << 11) | 6;  // MTRRs on, default type WB

// Control-register and EFER bits (SDM vol. 3A §2.5, §2.2.1).
constexpr uint64_t kCr0Pe = 1u << 0, kCr0Mp = 1u << 1, kCr0Et = 1u << 4, kCr0Ne = 1u << 5,
                   kCr0Wp = 1u << 16, kCr0Pg = 1u << 31;
constexpr uint64_t kCr4Pae = 1u << 5;
constexpr uint64_t kEferLme = 1u << 8, kEferLma = 1u << 10;

// Page-table entry bits (SDM vol. 3A §4.5): present, writable, 2 MiB page.
constexpr uint64_t kPtePresentRw = 0x3, kPtePageSize = 0x80;

// LAPIC register offsets and delivery modes (SDM vol. 3A §10.5.1).
constexpr size_t kApicLvtLint0 = 0x350, kApicLvtLint1 = 0x360;
constexpr uint32_t kDeliveryExtInt = 7, kDeliveryNmi = 4;

// Boot GDT. Linux boot protocol (boot.rst, 64-bit and 32-bit protocols): flat
// __BOOT_CS = 0x10 and __BOOT_DS = 0x18; the TSS follows so TR is valid for VM entry.
constexpr uint16_t kSelCode = 0x10, kSelData = 0x18, kSelTss = 0x20;
constexpr uint16_t kFlagsCode64 = 0xa09b, kFlagsCode32 = 0xc09b, kFlagsData = 0xc093,
                   kFlagsTss = 0x808b;

constexpr uint64_t gdt_entry(uint16_t flags, uint32_t base, uint32_t limit) {
    return ((uint64_t{base} & 0xff000000u) << 32) | ((uint64_t{flags} & 0xf0ffu) << 40) |
           ((uint64_t{limit} & 0xf0000u) << 32) | ((uint64_t{base} & 0xffffffu) << 16) |
           (uint64_t{limit} & 0xffffu);
}

kvm_segment segment_from(uint64_t entry, uint16_t selector) {
    kvm_segment s{};
    s.base = static_cast<uint32_t>(((entry >> 16) & 0xffffff) | ((entry >> 32) & 0xff000000));
    uint32_t limit = static_cast<uint32_t>((entry & 0xffff) | ((entry >> 32) & 0xf0000));
    s.g = (entry >> 55) & 1;
    s.limit = s.g ? (limit << 12) | 0xfff : limit;
    s.selector = selector;
    s.type = (entry >> 40) & 0xf;
    s.s = (entry >> 44) & 1;
    s.dpl = (entry >> 45) & 3;
    s.present = (entry >> 47) & 1;
    s.avl = (entry >> 52) & 1;
    s.l = (entry >> 53) & 1;
    s.db = (entry >> 54) & 1;
    return s;
}

void set_lvt_delivery(kvm_lapic_state& l, size_t reg, uint32_t mode) {
    uint32_t v;
    std::memcpy(&v, &l.regs[reg], 4);
    v = (v & ~0x700u) | (mode << 8);
    std::memcpy(&l.regs[reg], &v, 4);
}

// Identity map of 0..4 GiB with 2 MiB pages: enough for the kernel, boot_params and
// command line wherever the loader put them below 4 GiB.
Result<void> write_identity_page_tables(GuestMemory& mem) {
    TRY(mem.write_obj(GuestAddress(kPml4), kPdpt | kPtePresentRw));
    for (uint64_t i = 0; i < 4; ++i) {
        TRY(mem.write_obj(GuestAddress(kPdpt + i * 8), (kPd + i * 0x1000) | kPtePresentRw));
        std::array<uint64_t, 512> pd;
        for (uint64_t j = 0; j < 512; ++j)
            pd[j] = ((i * 512 + j) << 21) | kPtePresentRw | kPtePageSize;
        TRY(mem.write_obj(GuestAddress(kPd + i * 0x1000), pd));
    }
    return {};
}

}  // namespace

Result<void> setup_common(kvm::Vcpu& vcpu) {
    auto m = [](Msr i, uint64_t v) {
        kvm_msr_entry e{};
        e.index = static_cast<uint32_t>(i);
        e.data = v;
        return e;
    };
    TRY(vcpu.set_msrs({m(Msr::SysenterCs, 0), m(Msr::SysenterEsp, 0), m(Msr::SysenterEip, 0),
                       m(Msr::Star, 0), m(Msr::Lstar, 0), m(Msr::Cstar, 0),
                       m(Msr::SyscallMask, 0), m(Msr::KernelGsBase, 0), m(Msr::Tsc, 0),
                       m(Msr::MiscEnable, kMiscEnableFastString),
                       m(Msr::MtrrDefType, kMtrrEnableWriteBack)}));
    kvm_fpu fpu{};
    fpu.fcw = 0x37f;     // x87 default control word (SDM vol. 1 §8.1.5)
    fpu.mxcsr = 0x1f80;  // all SSE exceptions masked (SDM vol. 1 §10.2.3)
    TRY(vcpu.set_fpu(fpu));
    // The in-kernel PIC reaches the BSP through LINT0 as ExtINT; LINT1 carries NMIs
    // (MP spec §3.6.2 virtual-wire mode).
    auto lapic = TRY(vcpu.get_lapic());
    set_lvt_delivery(lapic, kApicLvtLint0, kDeliveryExtInt);
    set_lvt_delivery(lapic, kApicLvtLint1, kDeliveryNmi);
    TRY(vcpu.set_lapic(lapic));
    return {};
}

Result<void> setup_boot_vcpu(kvm::Vcpu& vcpu, GuestMemory& mem, const boot::BootEntry& entry) {
    const bool long_mode = entry.mode == boot::EntryMode::Linux64;
    const std::array<uint64_t, 5> gdt{
        0, 0, gdt_entry(long_mode ? kFlagsCode64 : kFlagsCode32, 0, 0xfffff),
        gdt_entry(kFlagsData, 0, 0xfffff), gdt_entry(kFlagsTss, 0, 0x67)};
    TRY(mem.write_obj(GuestAddress(kGdtAddr), gdt));
    TRY(mem.write_obj(GuestAddress(kIdtAddr), uint64_t{0}));

    auto sregs = TRY(vcpu.get_sregs());
    sregs.gdt.base = kGdtAddr;
    sregs.gdt.limit = sizeof(gdt) - 1;
    sregs.idt.base = kIdtAddr;
    sregs.idt.limit = 0;
    sregs.cs = segment_from(gdt[2], kSelCode);
    sregs.ds = sregs.es = sregs.fs = sregs.gs = sregs.ss = segment_from(gdt[3], kSelData);
    sregs.tr = segment_from(gdt[4], kSelTss);

    kvm_regs regs{};
    regs.rflags = 0x2;  // reserved bit 1; IF clear
    regs.rip = entry.entry.raw;
    if (long_mode) {
        // boot.rst "64-bit Boot Protocol": paging on with an identity map, RSI = boot_params.
        TRY(write_identity_page_tables(mem));
        sregs.cr3 = kPml4;
        sregs.cr4 = kCr4Pae;
        sregs.cr0 = kCr0Pe | kCr0Mp | kCr0Et | kCr0Ne | kCr0Wp | kCr0Pg;
        sregs.efer = kEferLme | kEferLma;
        regs.rsi = entry.boot_info.raw;
        regs.rsp = regs.rbp = kBootStack;
    } else {
        // Xen PVH ABI (docs/misc/pvh.pandoc): 32-bit protected mode, paging off,
        // flat CS/DS/ES/SS, TR a 32-bit TSS, EBX = hvm_start_info.
        sregs.cr0 = kCr0Pe | kCr0Et;
        sregs.cr4 = 0;
        sregs.efer = 0;
        regs.rbx = entry.boot_info.raw;
        regs.rsp = kBootStack;
    }
    TRY(vcpu.set_sregs(sregs));
    TRY(vcpu.set_regs(regs));
    return {};
}

}  // namespace kestrel::x86
