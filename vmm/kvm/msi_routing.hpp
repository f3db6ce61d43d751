// MSI delivery through KVM: GsiRouting owns the VM's GSI routing table (the in-kernel
// irqchip pins plus one MSI route per allocated GSI); KvmMsiSink gives one PCI function's
// MSI-X vectors a GSI and an irqfd each, so firing a vector is one eventfd write.
#pragma once

#include <map>
#include <mutex>
#include <vector>

#include "devices/pci/msix.hpp"
#include "vmm/base/fd.hpp"
#include "vmm/kvm/kvm.hpp"

namespace kestrel::kvm {

class GsiRouting {
public:
    explicit GsiRouting(Vm& vm) : vm_(vm) {}
    Result<uint32_t> allocate();
    Result<void> set_msi(uint32_t gsi, uint64_t address, uint32_t data);

private:
    Result<void> commit_locked();

    Vm& vm_;
    std::mutex mu_;
    uint32_t next_gsi_ = kFirstMsiGsi;
    std::map<uint32_t, kvm_irq_routing_entry> msi_routes_;
    // GSIs 0..23 stay wired to the IOAPIC (and 0..15 to the PIC) as KVM sets them up.
    static constexpr uint32_t kIoapicPins = 24;
    static constexpr uint32_t kFirstMsiGsi = kIoapicPins;
    static constexpr uint32_t kMaxGsi = 1024;  // KVM_MAX_IRQ_ROUTES is 4096; plenty below it
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
