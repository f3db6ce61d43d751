#include "vmm/virtio_wiring.hpp"

#include <sys/eventfd.h>
#include <unistd.h>

#include "vmm/base/log.hpp"

namespace kestrel {

VirtioWiring::VirtioWiring(kvm::Vm& vm, kvm::GsiRouting& routing, GuestMemory& mem,
                           EventLoop& loop, std::shared_ptr<PciRoot> pci)
    : vm_(vm), mem_(mem), loop_(loop), pci_(std::move(pci)), routing_(routing) {}

VirtioWiring::~VirtioWiring() {
    pci_->set_bar_change_callback({});
    std::lock_guard lk(mu_);
    for (auto& f : functions_) detach_notifiers(f);
}

namespace {

// "name=value" for each non-zero counter; per-queue ones as name[q]=value.
class NonZeroList final : public MetricVisitor {
public:
    void counter(std::string_view name, uint64_t value, std::string_view, int queue) override {
        if (value == 0) return;
        if (queue >= 0) text += fmt::format(" {}[{}]={}", name, queue, value);
        else text += fmt::format(" {}={}", name, value);
    }
    std::string text;
};

}  // namespace

void VirtioWiring::log_metrics() {
    std::lock_guard lk(mu_);
    for (const auto& f : functions_) {
        NonZeroList l;
        f.pci->device().visit_metrics(l);
        log::info("{} counters:{}", f.name, l.text.empty() ? " none" : l.text);
    }
}

Result<void> VirtioWiring::add(std::shared_ptr<VirtioDevice> dev, std::string name) {
    auto msi = std::make_shared<kvm::KvmMsiSink>(routing_, vm_);
    auto pdev = std::make_shared<VirtioPciDevice>(std::move(dev), mem_, loop_, msi);
    auto slot = pci_->add_device(pdev);
    if (!slot) return std::unexpected(context(slot.error(), name));
    log::info("{}: PCI 00:{:02x}.0", name, *slot);
    std::lock_guard lk(mu_);
    functions_.push_back(Function{std::move(name), *slot, pdev, {}});
    devices_.push_back(std::move(pdev));
    return {};
}

Result<void> VirtioWiring::attach_notifiers(Function& f) {
    for (const auto& n : f.pci->notify_addresses()) {
        UniqueFd efd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
        if (!efd) return fail_errno("{}: eventfd", f.name);
        // virtio 1.2 §4.1.5.2: the driver writes the 16-bit queue index to the notify address.
        TRY(vm_.ioeventfd(n.address.raw, 2, efd.get(), true));
        std::weak_ptr<VirtioPciDevice> weak = f.pci;
        int fd = efd.get();
        uint16_t q = n.queue_index;
        auto added = loop_.add(fd, EPOLLIN, [weak, fd, q](uint32_t) {
            uint64_t count;
            if (::read(fd, &count, sizeof count) != sizeof count) return;
            if (auto p = weak.lock()) p->device().queue_notify(q);
        });
        if (!added) {
            (void)vm_.ioeventfd(n.address.raw, 2, fd, false);
            return std::unexpected(added.error());
        }
        f.notifiers.push_back(Notifier{n.address.raw, std::move(efd)});
    }
    return {};
}

void VirtioWiring::detach_notifiers(Function& f) {
    for (auto& n : f.notifiers) {
        (void)loop_.remove(n.efd.get());
        (void)vm_.ioeventfd(n.address, 2, n.efd.get(), false);
    }
    f.notifiers.clear();
}

Result<void> VirtioWiring::restore(size_t index, const VirtioPciDevice::State& s) {
    uint8_t slot;
    {
        std::lock_guard lk(mu_);
        if (index >= functions_.size()) return fail("virtio function {} does not exist", index);
        slot = functions_[index].slot;
        TRY(functions_[index].pci->restore(s));
    }
    pci_->reload(slot);  // the BAR change callback moves the ioeventfds (takes mu_)
    std::lock_guard lk(mu_);
    for (const auto& n : functions_[index].notifiers) {
        const uint64_t one = 1;
        if (::write(n.efd.get(), &one, sizeof one) != sizeof one)
            log::warn("{}: cannot notify its queues after the restore", functions_[index].name);
    }
    return {};
}

Result<void> VirtioWiring::connect() {
    {
        std::lock_guard lk(mu_);
        for (auto& f : functions_) TRY(attach_notifiers(f));
    }
    // A guest that moves BAR0 gets its notify addresses re-registered; until then (or if
    // that fails) notifications still arrive through MMIO exits to the transport.
    pci_->set_bar_change_callback([this](const PciBarChange& c) {
        std::lock_guard lk(mu_);
        for (auto& f : functions_) {
            if (f.slot != c.slot) continue;
            detach_notifiers(f);
            if (c.new_address)
                if (auto r = attach_notifiers(f); !r)
                    log::warn("{}: notifications fall back to MMIO exits: {}", f.name,
                              r.error().what());
        }
    });
    return {};
}

}  // namespace kestrel
