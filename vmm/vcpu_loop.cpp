#include "vmm/vcpu_loop.hpp"

#include <signal.h>

#include <fmt/format.h>

#include "vmm/base/log.hpp"
#include "vmm/seccomp/seccomp.hpp"

namespace kestrel {

namespace {

thread_local kvm_run* t_run = nullptr;

// Runs on the vCPU thread: if KVM_RUN has not been entered yet, immediate_exit makes the
// next one return EINTR at once (api.rst §5 "immediate_exit").
void on_kick(int) {
    if (t_run) t_run->immediate_exit = 1;
}
constexpr int kKickSignal = SIGUSR1;

std::string hex_bytes(const uint8_t* p, size_t n) {
    std::string s;
    for (size_t i = 0; i < n; ++i) s += fmt::format("{}{:02x}", i ? " " : "", p[i]);
    return s;
}

const char* internal_suberror_name(uint32_t sub) {
    switch (sub) {
    case KVM_INTERNAL_ERROR_EMULATION: return "instruction emulation failed";
    case KVM_INTERNAL_ERROR_SIMUL_EX: return "exception while delivering another";
    case KVM_INTERNAL_ERROR_DELIVERY_EV: return "event delivery failed";
    default: return "unknown suberror";
    }
}

}  // namespace

const char* phase_name(VcpuPhase p) {
    switch (p) {
    case VcpuPhase::NotStarted: return "not started";
    case VcpuPhase::InGuest: return "in guest";
    case VcpuPhase::InVmm: return "in vmm";
    case VcpuPhase::Parked: return "parked";
    case VcpuPhase::Ended: return "ended";
    }
    return "?";
}

void VcpuThread::install_kick_handler() {
    struct sigaction sa{};
    sa.sa_handler = on_kick;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0;  // no SA_RESTART: KVM_RUN must return EINTR
    sigaction(kKickSignal, &sa, nullptr);
}

void VcpuThread::start() {
    thread_ = std::thread([this] {
        t_run = vcpu_.run_area();
        sigset_t s;
        sigemptyset(&s);
        sigaddset(&s, kKickSignal);
        pthread_sigmask(SIG_UNBLOCK, &s, nullptr);
        seccomp::apply(seccomp::ThreadKind::Vcpu);
        loop();
        t_run = nullptr;
    });
    handle_ = thread_.native_handle();
    started_ = true;
}

void VcpuThread::kick() {
    if (started_) pthread_kill(handle_, kKickSignal);
}

void VcpuThread::join() {
    if (thread_.joinable()) thread_.join();
}

void VcpuThread::loop() {
    kvm_run* run = vcpu_.run_area();
    uint64_t t = metric_clock_ns();  // end of the last exit's handling
    auto throttle_woke = std::chrono::steady_clock::now();
    while (!ctl_.stopping()) {
        if (pause_requested_.load()) {
            set_phase(Phase::Parked);
            park(run);
            t = metric_clock_ns();
            continue;
        }
        set_phase(Phase::InGuest);
        auto entered = vcpu_.run();
        set_phase(Phase::InVmm);
        const uint64_t left = metric_clock_ns();
        bump_owned(counters_.run_ns, left - t);
        t = left;
        if (!entered) {
            ctl_.request({ExitKind::Error, 0, entered.error().what()});
            break;
        }
        if (!*entered) {
            // A kick: from pause or stop (checked at the top, which the kicker set first:
            // clearing immediate_exit here cannot hide one), or from the throttler.
            run->immediate_exit = 0;
            const std::chrono::microseconds sleep{throttle_us_.load()};
            const auto now = std::chrono::steady_clock::now();
            if (sleep.count() > 0 && now - throttle_woke >= kThrottleSlice) {
                throttle_sleep(sleep);
                throttle_woke = std::chrono::steady_clock::now();
                t = metric_clock_ns();  // the sleep is neither guest nor VMM time
            }
            continue;
        }
        if (!handle_exit(run)) break;  // this vCPU cannot continue; VmControl decides the VM
        t = metric_clock_ns();
        bump_owned(counters_.vmm_ns, t - left);
    }
    set_phase(Phase::Ended);
    std::lock_guard lk(park_mu_);
    ended_ = true;
    park_cv_.notify_all();
}

void VcpuThread::park(kvm_run* run) {
    // Finish the exit handled last, without entering the guest: the vCPU's state is then
    // complete (nothing half-done for a save) and the guest sees its I/O done on resume.
    run->immediate_exit = 1;
    if (auto r = vcpu_.run(); !r) log::warn("vCPU {}: completing pending I/O before pausing: {}", vcpu_.index(), r.error().what());
    std::unique_lock lk(park_mu_);
    parked_ = true;
    park_cv_.notify_all();
    park_cv_.wait(lk, [&] { return !pause_requested_.load() || ctl_.stopping(); });
    parked_ = false;
    // A pause or stop requested from here on is seen by the loop's check before the next
    // KVM_RUN, or its kick makes that KVM_RUN return at once.
    run->immediate_exit = 0;
}

void VcpuThread::throttle_sleep(std::chrono::microseconds d) {
    std::unique_lock lk(park_mu_);
    park_cv_.wait_for(lk, d, [&] { return pause_requested_.load() || ctl_.stopping(); });
}

bool VcpuThread::pause(std::chrono::milliseconds limit) {
    {
        std::lock_guard lk(park_mu_);  // a throttle sleep sees it (throttle_sleep)
        pause_requested_.store(true);
    }
    park_cv_.notify_all();
    kick();
    std::unique_lock lk(park_mu_);
    return park_cv_.wait_for(lk, limit, [&] { return parked_ || ended_ || !started_; });
}

void VcpuThread::resume() {
    {
        std::lock_guard lk(park_mu_);
        pause_requested_.store(false);
    }
    park_cv_.notify_all();
}

std::string VcpuThread::describe_stop(const char* what) {
    auto regs = vcpu_.get_regs();
    auto sregs = vcpu_.get_sregs();
    std::string where = regs ? fmt::format("RIP {:#x}", regs->rip) : "RIP unknown";
    if (sregs) where += fmt::format(" (CR0 {:#x}, EFER {:#x})", sregs->cr0, sregs->efer);
    return fmt::format("vCPU {} stopped: {} at {}", vcpu_.index(), what, where);
}

bool VcpuThread::handle_exit(kvm_run* run) {
    uint32_t reason = run->exit_reason;
    if (reason < counters_.by_reason.size()) bump_owned(counters_.by_reason[reason]);
    switch (reason) {
    case KVM_EXIT_IO: {
        if (run->io.direction == KVM_EXIT_IO_IN) bump_owned(counters_.io_in);
        // api.rst §5 KVM_EXIT_IO: `count` accesses of `size` bytes at data_offset (string I/O).
        auto* data = reinterpret_cast<uint8_t*>(run) + run->io.data_offset;
        for (uint32_t i = 0; i < run->io.count; ++i) {
            uint8_t* p = data + size_t{i} * run->io.size;
            if (run->io.direction == KVM_EXIT_IO_OUT)
                pio_.write(run->io.port, std::span<const uint8_t>(p, run->io.size));
            else
                pio_.read(run->io.port, std::span<uint8_t>(p, run->io.size));
        }
        return true;
    }
    case KVM_EXIT_MMIO: {
        uint32_t len = std::min<uint32_t>(run->mmio.len, sizeof run->mmio.data);
        if (!run->mmio.is_write) bump_owned(counters_.mmio_read);
        if (run->mmio.is_write)
            mmio_.write(run->mmio.phys_addr, std::span<const uint8_t>(run->mmio.data, len));
        else
            mmio_.read(run->mmio.phys_addr, std::span<uint8_t>(run->mmio.data, len));
        return true;
    }
    case KVM_EXIT_IOAPIC_EOI:
        // The guest EOI'd a level-triggered vector of the userspace IOAPIC (api.rst §5).
        if (on_ioapic_eoi_) on_ioapic_eoi_(run->eoi.vector);
        return true;
    case KVM_EXIT_INTR:
    case KVM_EXIT_HLT:  // the in-kernel LAPIC handles HLT; a stray one just re-enters
        return true;
    case KVM_EXIT_SHUTDOWN:
        // A triple fault (or INIT-less shutdown) of this vCPU: SDM vol. 3A §6.15, #DF. On AMD
        // KVM reinitialises the VMCB before it reports the shutdown (the VMCB is undefined
        // after a SHUTDOWN intercept), so the registers read now are the reset state.
        ctl_.request({ExitKind::TripleFault, 0,
                      describe_stop("the guest triple-faulted (KVM_EXIT_SHUTDOWN; on AMD hosts "
                                    "KVM has already reset the registers shown)")});
        return false;
    case KVM_EXIT_SYSTEM_EVENT:
        switch (run->system_event.type) {
        case KVM_SYSTEM_EVENT_SHUTDOWN:
            ctl_.request({ExitKind::PowerOff, 0, "guest powered off"});
            return false;
        case KVM_SYSTEM_EVENT_RESET:
            ctl_.request({ExitKind::Reset, 0, "guest requested a reset"});
            return false;
        default:
            ctl_.request({ExitKind::Error, 0,
                          fmt::format("guest system event {}", run->system_event.type)});
            return false;
        }
    case KVM_EXIT_INTERNAL_ERROR: {
        const auto& ef = run->emulation_failure;
        std::string insn;
        if (ef.suberror == KVM_INTERNAL_ERROR_EMULATION && ef.ndata >= 3 &&
            (ef.flags & KVM_INTERNAL_ERROR_EMULATION_FLAG_INSTRUCTION_BYTES))
            insn = hex_bytes(ef.insn_bytes, std::min<size_t>(ef.insn_size, sizeof ef.insn_bytes));
        std::string msg = describe_stop(
            fmt::format("KVM_EXIT_INTERNAL_ERROR, suberror {} ({})", run->internal.suberror,
                        internal_suberror_name(run->internal.suberror))
                .c_str());
        if (!insn.empty()) msg += fmt::format("; instruction bytes: {}", insn);
        msg += ". Host KVM could not execute this guest instruction.";
        if (kvm::System::host_is_pvm())
            msg += " This host's /dev/kvm is kvm-pvm, which runs ordinary (non-PVM) guests "
                   "through KVM's instruction emulator; it cannot run IRET, INT3, XSAVE or "
                   "CMPXCHG16B, so a stock Linux kernel cannot boot here. Run kestrel on a host "
                   "with VT-x/AMD-V, or inside the nested test host (tools/nested/run-tests).";
        ctl_.request({ExitKind::HostCannotRun, 0, msg});
        return false;
    }
    case KVM_EXIT_FAIL_ENTRY:
        ctl_.request({ExitKind::HostCannotRun, 0,
                      describe_stop(fmt::format("KVM_EXIT_FAIL_ENTRY, hardware entry failure "
                                                "reason {:#x}: the host refused the vCPU state",
                                                run->fail_entry.hardware_entry_failure_reason)
                                        .c_str())});
        return false;
    default:
        ctl_.request({ExitKind::Error, 0,
                      describe_stop(fmt::format("unexpected KVM exit reason {}", reason).c_str())});
        return false;
    }
}

}  // namespace kestrel
