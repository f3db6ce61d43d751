// How a VM run ended, and the process exit code that tells it (documented in README).
// VmControl collects the first ending any thread reports and wakes whoever waits for it.
#pragma once

#include <sys/eventfd.h>

#include <atomic>
#include <chrono>
#include <optional>
#include <condition_variable>
#include <mutex>
#include <string>

#include "vmm/base/fd.hpp"

namespace kestrel {

enum class ExitKind { PowerOff, Reset, TripleFault, HostCannotRun, DebugExit, Error, Signal };

struct GuestExit {
    ExitKind kind = ExitKind::Error;
    int code = 0;  // debug-exit value or signal number
    std::string message;
};

// Process exit codes.
inline constexpr int kExitPowerOff = 0;
inline constexpr int kExitError = 1;
inline constexpr int kExitUsage = 2;
inline constexpr int kExitReset = 3;
inline constexpr int kExitTripleFault = 4;
inline constexpr int kExitHostCannotRun = 5;

inline int exit_code_for(const GuestExit& e) {
    switch (e.kind) {
    case ExitKind::PowerOff: return kExitPowerOff;
    case ExitKind::Reset: return kExitReset;
    case ExitKind::TripleFault: return kExitTripleFault;
    case ExitKind::HostCannotRun: return kExitHostCannotRun;
    case ExitKind::DebugExit: return e.code & 0xff;
    case ExitKind::Signal: return 128 + e.code;
    case ExitKind::Error: break;
    }
    return kExitError;
}

class VmControl {
public:
    // How long a vCPU's shutdown (triple fault) waits before it decides the VM's end. One
    // host (nested SVM under QEMU 7.2 TCG) was seen to triple-fault an AP just before the
    // boot CPU wrote S5: that emulator corrupts a guest RIP now and then (tests/nested/
    // README.md). A clean ending requested within this window wins, so a guest already on
    // its way out is not reported as crashed; a lone triple fault ends the VM after it.
    static constexpr std::chrono::milliseconds kShutdownGrace{200};

    VmControl() : wake_fd_(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {}

    // The first request wins; later ones (e.g. other vCPUs stopping) are ignored, except
    // that any request replaces a pending shutdown within its grace period.
    void request(GuestExit e) {
        {
            std::lock_guard lk(mu_);
            if (stopping_.load()) return;
            if (e.kind == ExitKind::TripleFault) {
                if (!pending_shutdown_) pending_shutdown_ = std::move(e);
                cv_.notify_all();
                return;
            }
            exit_ = std::move(e);
            stop_locked();
        }
        cv_.notify_all();
    }
    bool stopping() const { return stopping_.load(std::memory_order_relaxed); }
    GuestExit wait() {
        std::unique_lock lk(mu_);
        cv_.wait(lk, [&] { return stopping_.load() || pending_shutdown_.has_value(); });
        if (!stopping_.load()) {
            cv_.wait_for(lk, kShutdownGrace, [&] { return stopping_.load(); });
            if (!stopping_.load()) {
                exit_ = std::move(*pending_shutdown_);
                stop_locked();
            }
        }
        return exit_;
    }
    // Readable once the VM is stopping (for the event loop's epoll set).
    int wake_fd() const { return wake_fd_.get(); }

private:
    void stop_locked() {
        stopping_.store(true);
        uint64_t one = 1;
        [[maybe_unused]] auto n = ::write(wake_fd_.get(), &one, sizeof one);
    }

    std::mutex mu_;
    std::condition_variable cv_;
    std::atomic<bool> stopping_{false};
    std::optional<GuestExit> pending_shutdown_;
    GuestExit exit_;
    UniqueFd wake_fd_;
};

}  // namespace kestrel
