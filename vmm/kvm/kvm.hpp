// RAII owners of the three KVM file descriptors: the system (/dev/kvm), a VM and a vCPU
// (KVM api.rst §4). Each ioctl wrapper returns Result; nothing here knows about devices.
#pragma once

#include <linux/kvm.h>

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "vmm/base/error.hpp"
#include "vmm/base/fd.hpp"
#include "vmm/base/mapping.hpp"
#include "vmm/kvm/uapi_flex.hpp"

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
    // The MSRs KVM saves and restores for a vCPU (api.rst §4.3 KVM_GET_MSR_INDEX_LIST).
    Result<std::vector<uint32_t>> msr_index_list() const;
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
    // The pages of `slot` written since the last call (its memory region registered with
    // KVM_MEM_LOG_DIRTY_PAGES), one bit per page into `bitmap`, which KVM clears and
    // write-protects again (api.rst §4.8 KVM_GET_DIRTY_LOG). `bitmap` holds ceil(pages/64) words.
    Result<void> get_dirty_log(uint32_t slot, std::span<uint64_t> bitmap) const;
    // The kvm-clock base every vCPU's clock derives from (api.rst §4.88/§4.89).
    Result<kvm_clock_data> get_clock() const;
    Result<void> set_clock(const kvm_clock_data& c);
    // The in-kernel PIC/IOAPIC (chip_id 0 master PIC, 1 slave PIC, 2 IOAPIC; api.rst §4.26/
    // §4.27 KVM_GET/SET_IRQCHIP) and i8254 (§4.75 KVM_GET/SET_PIT2), with create_irqchip.
    Result<kvm_irqchip> get_irqchip(uint32_t chip_id) const;
    Result<void> set_irqchip(const kvm_irqchip& c);
    Result<kvm_pit_state2> get_pit2() const;
    Result<void> set_pit2(const kvm_pit_state2& p);

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
    // The rest of a vCPU's state, for snapshots (api.rst §4.38/§4.39 MP_STATE, §4.42/§4.43
    // XSAVE, §4.44/§4.45 XCRS, §4.32/§4.33 DEBUGREGS, §4.31/§4.32 VCPU_EVENTS, §4.18 MSRS).
    Result<kvm_mp_state> get_mp_state() const;
    Result<void> set_mp_state(const kvm_mp_state& s);
    Result<uapi::Xsave> get_xsave() const;
    Result<void> set_xsave(const uapi::Xsave& x);
    Result<kvm_xcrs> get_xcrs() const;
    Result<void> set_xcrs(const kvm_xcrs& x);
    Result<kvm_debugregs> get_debugregs() const;
    Result<void> set_debugregs(const kvm_debugregs& d);
    Result<kvm_vcpu_events> get_vcpu_events() const;
    Result<void> set_vcpu_events(const kvm_vcpu_events& e);
    // The values of `indices`, in that order; refuses (naming it) an MSR KVM does not read.
    Result<std::vector<kvm_msr_entry>> get_msrs(const std::vector<uint32_t>& indices) const;
    // KVM_GET_MSRS over `entries` (indices set): how many it read before the first it cannot.
    Result<size_t> count_readable_msrs(std::span<kvm_msr_entry> entries) const;
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
