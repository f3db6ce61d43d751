// The per-vCPU thread: KVM_RUN, then dispatch the exit synchronously (port I/O and MMIO to
// the buses; shutdown and host failures to VmControl). Stopped by signal + immediate_exit.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <pthread.h>
#include <thread>

#include "devices/bus.hpp"
#include "vmm/kvm/kvm.hpp"
#include "vmm/vm_exit.hpp"

namespace kestrel {

struct VcpuExitCounters {
    std::array<uint64_t, 64> by_reason{};  // indexed by KVM_EXIT_*
};

class VcpuThread {
public:
    // `on_ioapic_eoi`: the userspace IOAPIC's end of interrupt (split irqchip), else empty.
    VcpuThread(kvm::Vcpu& vcpu, const Bus& pio, const Bus& mmio, VmControl& ctl,
               std::function<void(uint8_t)> on_ioapic_eoi = {})
        : vcpu_(vcpu), pio_(pio), mmio_(mmio), ctl_(ctl), on_ioapic_eoi_(std::move(on_ioapic_eoi)) {}
    VcpuThread(const VcpuThread&) = delete;
    ~VcpuThread() { join(); }

    // Installs the kick signal handler; once per process before any start().
    static void install_kick_handler();
    void start();
    // Makes a running KVM_RUN return and keeps the next one from entering the guest.
    void kick();
    void join();
    const VcpuExitCounters& counters() const { return counters_; }

private:
    void loop();
    // False when this vCPU must not enter the guest again.
    bool handle_exit(kvm_run* run);
    std::string describe_stop(const char* what);

    kvm::Vcpu& vcpu_;
    const Bus& pio_;
    const Bus& mmio_;
    VmControl& ctl_;
    std::function<void(uint8_t)> on_ioapic_eoi_;
    std::thread thread_;
    pthread_t handle_{};
    std::atomic<bool> started_{false};
    VcpuExitCounters counters_;
};

}  // namespace kestrel
