// VirtioWiring: puts virtio devices on the PCI root and connects them to KVM: one irqfd-backed
// MSI sink per function, and one ioeventfd per queue notify address, so neither a
// notification nor an interrupt costs a vCPU exit to userspace. Follows BAR moves.
#pragma once

#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "devices/pci/pci_root.hpp"
#include "devices/virtio/virtio_pci.hpp"
#include "vmm/event_loop.hpp"
#include "vmm/kvm/msi_routing.hpp"

namespace kestrel {

class VirtioWiring {
public:
    VirtioWiring(kvm::Vm& vm, kvm::GsiRouting& routing, GuestMemory& mem, EventLoop& loop,
                 std::shared_ptr<PciRoot> pci);
    ~VirtioWiring();

    Result<void> add(std::shared_ptr<VirtioDevice> dev, std::string name);
    // After every add(): registers the ioeventfds at the BAR addresses the root assigned.
    Result<void> connect();

    const std::vector<std::shared_ptr<VirtioPciDevice>>& devices() const { return devices_; }
    // Puts function `index` (devices() order) back to a saved state (VirtioPciDevice::
    // restore): its BARs decode where they did, the ioeventfds follow, and every queue is
    // notified once through them, so chains the device handed back at the save are served
    // when the event loop runs.
    Result<void> restore(size_t index, const VirtioPciDevice::State& s);
    // One info line per device with its non-zero counters, e.g. at exit (tests read them).
    void log_metrics();

private:
    struct Notifier {
        uint64_t address;
        UniqueFd efd;
    };
    struct Function {
        std::string name;
        uint8_t slot;
        std::shared_ptr<VirtioPciDevice> pci;
        std::vector<Notifier> notifiers;
    };
    Result<void> attach_notifiers(Function& f);
    void detach_notifiers(Function& f);

    kvm::Vm& vm_;
    GuestMemory& mem_;
    EventLoop& loop_;
    std::shared_ptr<PciRoot> pci_;
    kvm::GsiRouting& routing_;
    std::mutex mu_;
    std::vector<Function> functions_;
    std::vector<std::shared_ptr<VirtioPciDevice>> devices_;
};

}  // namespace kestrel
