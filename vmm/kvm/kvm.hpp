// RAII owners of the three KVM file descriptors: the system (/dev/kvm), a VM and a vCPU
// (KVM api.rst §4). Each ioctl wrapper returns Result; nothing here knows about devices.
#pragma once

#include <linux/kvm.h>

#include <cstdint>
#include <string>
#include <vector>

#include "vmm/base/error.hpp"
#include "vmm/base/fd.hpp"
#include "vmm/base/mapping.hpp"

namespace kestrel::kvm {

class System {
public:
    // Opens the device and checks the API version and every capability kestrel relies on,
    // naming the first one missing.
    static Result<System> open(const std::string& path = "/dev/kvm");

    int fd() const { return fd_.get(); }
    int check_extension(long cap) const;
    size_t vcpu_mmap_size() const { return vcpu_mmap_size_; }
    Result<std::vector<kvm_cpuid_entry2>> supported_cpuid() const;
    // True when the host module is kvm-pvm, which emulates non-PVM guests instruction by instruction.
    static bool host_is_pvm();

private:
    explicit System(UniqueFd fd) : fd_(std::move(fd)) {}
    UniqueFd fd_;
    size_t vcpu_mmap_size_ = 0;
};

class Vm {
public:
    static Result<Vm> create(const System& sys);

    int fd() const { return fd_.get(); }
    Result<void> set_user_memory_region(uint32_t slot, uint64_t guest_phys, uint64_t size,
                                        void* host, uint32_t flags = 0);
    // x86 set-up that must precede vCPU creation (api.rst §4.30 KVM_SET_TSS_ADDR, §4.48).
    Result<void> set_tss_and_identity_map(uint64_t tss_addr, uint64_t identity_map_addr);
    Result<void> create_irqchip();
    // Local APICs in the kernel, IOAPIC (and no PIC) in userspace; `ioapic_pins` GSIs are
    // reserved for its routes (api.rst KVM_CAP_SPLIT_IRQCHIP).
    Result<void> create_split_irqchip(uint32_t ioapic_pins);
    Result<void> signal_msi(uint64_t address, uint32_t data);
    Result<void> create_pit2();
    Result<void> irq_line(uint32_t irq, bool level);
    // Replaces the whole GSI routing table (api.rst §4.52): callers include the irqchip routes.
    Result<void> set_gsi_routing(const std::vector<kvm_irq_routing_entry>& entries);
    // An eventfd write injects `gsi` (api.rst §4.75 KVM_IRQFD).
    Result<void> irqfd(int eventfd, uint32_t gsi, bool assign);
    // A guest write of `len` bytes at MMIO `addr` signals `eventfd` in the kernel instead of
    // exiting to userspace (api.rst §4.59 KVM_IOEVENTFD). len 0 matches any width.
    Result<void> ioeventfd(uint64_t addr, uint32_t len, int eventfd, bool assign);

private:
    explicit Vm(UniqueFd fd) : fd_(std::move(fd)) {}
    UniqueFd fd_;
};

class Vcpu {
public:
    static Result<Vcpu> create(const System& sys, const Vm& vm, uint32_t index);

    int fd() const { return fd_.get(); }
    uint32_t index() const { return index_; }
    kvm_run* run_area() const { return reinterpret_cast<kvm_run*>(run_.data()); }

    // One KVM_RUN; Ok(false) when interrupted by a signal (EINTR) or immediate_exit.
    Result<bool> run();

    Result<kvm_regs> get_regs() const;
    Result<void> set_regs(const kvm_regs& r);
    Result<kvm_sregs> get_sregs() const;
    Result<void> set_sregs(const kvm_sregs& s);
    Result<void> set_fpu(const kvm_fpu& f);
    Result<void> set_cpuid(const std::vector<kvm_cpuid_entry2>& entries);
    Result<void> set_msrs(const std::vector<kvm_msr_entry>& entries);
    Result<kvm_lapic_state> get_lapic() const;
    Result<void> set_lapic(const kvm_lapic_state& l);
    Result<kvm_translation> translate(uint64_t linear) const;
    // Tells a kvm-clock guest it was paused by the host, so it does not take the time it was
    // stopped for a soft lockup (api.rst §4.93 KVM_KVMCLOCK_CTRL). Ok(false) when the guest
    // has not enabled kvm-clock (nothing to tell).
    Result<bool> kvmclock_ctrl();

private:
    Vcpu(UniqueFd fd, Mapping run, uint32_t index)
        : fd_(std::move(fd)), run_(std::move(run)), index_(index) {}
    UniqueFd fd_;
    Mapping run_;
    uint32_t index_;
};

}  // namespace kestrel::kvm
