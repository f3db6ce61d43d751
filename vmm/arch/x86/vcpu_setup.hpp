// Initial architectural state of x86-64 vCPUs: MSRs, FPU, LAPIC LINT pins for every vCPU,
// and for the boot vCPU the registers, segments and page tables the chosen boot protocol
// expects. Application processors are left in wait-for-SIPI for the guest to start.
#pragma once

#include "boot/loader/boot_loader.hpp"
#include "vmm/kvm/kvm.hpp"
#include "vmm/memory/guest_memory.hpp"

namespace kestrel::x86 {

// Every vCPU: CPUID must already be set. Boot MSRs, FPU control words, LINT0=ExtINT, LINT1=NMI.
Result<void> setup_common(kvm::Vcpu& vcpu);

// The boot vCPU: writes the boot GDT (and for 64-bit entry the identity page tables) into
// guest memory, then loads segments and registers for entry.mode.
Result<void> setup_boot_vcpu(kvm::Vcpu& vcpu, GuestMemory& mem, const boot::BootEntry& entry);

}  // namespace kestrel::x86
