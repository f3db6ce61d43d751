#include "vmm/kvm/msi_routing.hpp"

#include <sys/eventfd.h>

#include "vmm/base/log.hpp"

namespace kestrel::kvm {

Result<uint32_t> GsiRouting::allocate() {
    std::lock_guard lk(mu_);
    if (next_gsi_ >= kMaxGsi) return fail("out of GSIs for MSI routes ({} in use)", next_gsi_);
    return next_gsi_++;
}

Result<void> GsiRouting::set_msi(uint32_t gsi, uint64_t address, uint32_t data) {
    std::lock_guard lk(mu_);
    kvm_irq_routing_entry e{};
    e.gsi = gsi;
    e.type = KVM_IRQ_ROUTING_MSI;
    e.u.msi.address_lo = static_cast<uint32_t>(address);
    e.u.msi.address_hi = static_cast<uint32_t>(address >> 32);
    e.u.msi.data = data;
    msi_routes_[gsi] = e;
    return commit_locked();
}

Result<void> GsiRouting::commit_locked() {
    // KVM_SET_GSI_ROUTING replaces the table, so the default irqchip routes KVM created with
    // KVM_CREATE_IRQCHIP (api.rst §4.24) are restated: GSI n -> IOAPIC pin n, and for
    // n < 16 also PIC pin n (master 0..7, slave 8..15).
    std::vector<kvm_irq_routing_entry> table;
    for (uint32_t pin = 0; kernel_ioapic_ && pin < kIoapicPins; ++pin) {
        kvm_irq_routing_entry e{};
        e.gsi = pin;
        e.type = KVM_IRQ_ROUTING_IRQCHIP;
        e.u.irqchip.irqchip = KVM_IRQCHIP_IOAPIC;
        e.u.irqchip.pin = pin;
        table.push_back(e);
        if (pin < 16) {
            e.u.irqchip.irqchip = pin < 8 ? KVM_IRQCHIP_PIC_MASTER : KVM_IRQCHIP_PIC_SLAVE;
            e.u.irqchip.pin = pin % 8;
            table.push_back(e);
        }
    }
    for (auto& [gsi, e] : msi_routes_) table.push_back(e);
    return vm_.set_gsi_routing(table);
}

void KvmIoapicSink::route(uint8_t pin, uint64_t address, uint32_t data) {
    if (auto r = routing_.set_msi(pin, address, data); !r)
        log::error("IOAPIC pin {}: {}", pin, r.error().what());
}

void KvmIoapicSink::deliver(uint64_t address, uint32_t data) {
    if (auto r = vm_.signal_msi(address, data); !r)
        log::error("IOAPIC message {:#x}/{:#x}: {}", address, data, r.error().what());
}

KvmMsiSink::~KvmMsiSink() {
    for (auto& [v, vec] : vectors_) (void)vm_.irqfd(vec.irqfd.get(), vec.gsi, false);
}

void KvmMsiSink::configure(uint16_t vector, uint64_t address, uint32_t data) {
    std::lock_guard lk(mu_);
    auto it = vectors_.find(vector);
    if (it == vectors_.end()) {
        auto gsi = routing_.allocate();
        if (!gsi) {
            log::error("MSI-X vector {}: {}", vector, gsi.error().what());
            return;
        }
        UniqueFd efd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
        if (!efd) {
            log::error("MSI-X vector {}: eventfd: {}", vector, std::strerror(errno));
            return;
        }
        // Route first, then attach the irqfd, so the GSI never points nowhere.
        if (auto r = routing_.set_msi(*gsi, address, data); !r) {
            log::error("MSI-X vector {}: {}", vector, r.error().what());
            return;
        }
        if (auto r = vm_.irqfd(efd.get(), *gsi, true); !r) {
            log::error("MSI-X vector {}: {}", vector, r.error().what());
            return;
        }
        vectors_.emplace(vector, Vector{*gsi, std::move(efd)});
        return;
    }
    if (auto r = routing_.set_msi(it->second.gsi, address, data); !r)
        log::error("MSI-X vector {}: {}", vector, r.error().what());
}

void KvmMsiSink::fire(uint16_t vector) {
    int fd = -1;
    {
        std::lock_guard lk(mu_);
        auto it = vectors_.find(vector);
        if (it != vectors_.end()) fd = it->second.irqfd.get();
    }
    if (fd < 0) {
        log::debug("MSI-X vector {} fired before the guest configured it", vector);
        return;
    }
    uint64_t one = 1;
    if (::write(fd, &one, sizeof one) < 0) log::error("MSI-X vector {}: irqfd write failed", vector);
}

}  // namespace kestrel::kvm
