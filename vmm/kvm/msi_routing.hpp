// MSI delivery through KVM: GsiRouting owns the VM's GSI routing table (the in-kernel
// irqchip pins plus one MSI route per allocated GSI); KvmMsiSink gives one PCI function's
// MSI-X vectors a GSI and an irqfd each, so firing a vector is one eventfd write.
#pragma once

#include <map>
#include <mutex>
#include <vector>

#include "devices/legacy/ioapic.hpp"
#include "devices/pci/msix.hpp"
#include "vmm/base/fd.hpp"
#include "vmm/kvm/kvm.hpp"

namespace kestrel::kvm {

class GsiRouting {
public:
    // `kernel_ioapic`: KVM_CREATE_IRQCHIP made the PIC+IOAPIC, whose pin routes every table
    // restates. With the split irqchip GSIs 0..23 are the userspace IOAPIC's pins instead
    // (set_msi on them tells KVM which vectors need KVM_EXIT_IOAPIC_EOI).
    GsiRouting(Vm& vm, bool kernel_ioapic) : vm_(vm), kernel_ioapic_(kernel_ioapic) {}
    Result<uint32_t> allocate();
    Result<void> set_msi(uint32_t gsi, uint64_t address, uint32_t data);

private:
    Result<void> commit_locked();

    Vm& vm_;
    const bool kernel_ioapic_;
    std::mutex mu_;
    uint32_t next_gsi_ = kFirstMsiGsi;
    std::map<uint32_t, kvm_irq_routing_entry> msi_routes_;
public:
    // GSIs 0..23 are IOAPIC pins (in-kernel: also 0..15 PIC pins); MSI routes come after.
    static constexpr uint32_t kIoapicPins = 24;

private:
    static constexpr uint32_t kFirstMsiGsi = kIoapicPins;
    static constexpr uint32_t kMaxGsi = 1024;  // KVM_MAX_IRQ_ROUTES is 4096; plenty below it
};

// The userspace IOAPIC's pins (split irqchip): each pin's message is also its route at GSI
// = pin, which is how KVM learns the level-triggered vectors (api.rst, KVM_CAP_SPLIT_IRQCHIP);
// delivery is KVM_SIGNAL_MSI.
class KvmIoapicSink final : public IoApicSink {
public:
    KvmIoapicSink(GsiRouting& routing, Vm& vm) : routing_(routing), vm_(vm) {}
    void route(uint8_t pin, uint64_t address, uint32_t data) override;
    void deliver(uint64_t address, uint32_t data) override;

private:
    GsiRouting& routing_;
    Vm& vm_;
};

class KvmMsiSink final : public MsiSink {
public:
    KvmMsiSink(GsiRouting& routing, Vm& vm) : routing_(routing), vm_(vm) {}
    ~KvmMsiSink() override;
    void configure(uint16_t vector, uint64_t address, uint32_t data) override;
    void fire(uint16_t vector) override;

private:
    struct Vector {
        uint32_t gsi;
        UniqueFd irqfd;
    };
    GsiRouting& routing_;
    Vm& vm_;
    std::mutex mu_;
    std::map<uint16_t, Vector> vectors_;
};

}  // namespace kestrel::kvm
