// The per-vCPU thread: KVM_RUN, then dispatch the exit synchronously (port I/O and MMIO to
// the buses; shutdown and host failures to VmControl). Stopped by signal + immediate_exit.
//
// Pause (Firecracker's vstate/vcpu state machine: running -> paused -> running): a kick takes
// the vCPU out of KVM_RUN; one more KVM_RUN with immediate_exit set completes the exit just
// handled (api.rst §5 "immediate_exit": pending PIO/MMIO is finished without entering the
// guest), then the thread parks until resume() or the VM stops.
#pragma once

#include <array>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <pthread.h>
#include <thread>

#include "devices/bus.hpp"
#include "devices/metrics.hpp"
#include "vmm/kvm/kvm.hpp"
#include "vmm/vm_exit.hpp"

namespace kestrel {

// Written by the vCPU's own thread only (bump_owned: no locked instruction), read whole by
// any thread (the metrics exporters) at any time.
struct VcpuExitCounters {
    std::array<std::atomic<uint64_t>, 64> by_reason{};  // indexed by KVM_EXIT_*
    // Of the KVM_EXIT_IO and KVM_EXIT_MMIO exits, the reads (the rest are writes).
    std::atomic<uint64_t> io_in{0}, mmio_read{0};
    // Time inside KVM_RUN, and time handling exits in kestrel between two KVM_RUNs (a
    // monotonic clock read at each boundary; time parked while paused is in neither).
    std::atomic<uint64_t> run_ns{0}, vmm_ns{0};
};

// Where a vCPU's thread is, for GET /vm/info: written by that thread alone with relaxed
// stores (a plain move on x86: nothing on the exit path waits for it), read by any thread.
enum class VcpuPhase : uint8_t { NotStarted, InGuest, InVmm, Parked, Ended };
const char* phase_name(VcpuPhase p);

class VcpuThread {
public:
    using Phase = VcpuPhase;

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
    // Asks the vCPU to park; true once it is parked (or has ended) within `limit`.
    bool pause(std::chrono::milliseconds limit);
    void resume();
    // Auto-converge (QEMU's cpu-throttle): after running at least kThrottleSlice since its
    // last throttle sleep, a kicked vCPU sleeps `sleep` outside the guest (0: never). The
    // kicks come from Vmm's throttler every kThrottleSlice; a pause or stop ends a sleep.
    static constexpr std::chrono::milliseconds kThrottleSlice{10};
    void set_throttle_sleep(std::chrono::microseconds sleep) { throttle_us_.store(sleep.count()); }
    const VcpuExitCounters& counters() const { return counters_; }
    Phase phase() const { return phase_.load(std::memory_order_relaxed); }

private:
    void loop();
    void park(kvm_run* run);
    void throttle_sleep(std::chrono::microseconds d);
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
    std::atomic<bool> pause_requested_{false};
    std::atomic<int64_t> throttle_us_{0};
    std::mutex park_mu_;
    std::condition_variable park_cv_;
    bool parked_ = false;  // under park_mu_
    bool ended_ = false;   // under park_mu_: the loop has returned
    VcpuExitCounters counters_;
    std::atomic<Phase> phase_{Phase::NotStarted};
    void set_phase(Phase p) { phase_.store(p, std::memory_order_relaxed); }
};

}  // namespace kestrel
