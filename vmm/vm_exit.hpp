// How a VM run ended, and the process exit code that tells it (documented in README).
// VmControl collects the first ending any thread reports and wakes whoever waits for it.
#pragma once

#include <sys/eventfd.h>

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <string>

#include "vmm/base/fd.hpp"

namespace kestrel {

// Migrated: the VM now runs in the destination kestrel (vmm/migration_job.hpp).
enum class ExitKind { PowerOff, Reset, TripleFault, HostCannotRun, DebugExit, Error, Signal, Migrated };

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
    case ExitKind::PowerOff:
    case ExitKind::Migrated: return kExitPowerOff;
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
    VmControl() : wake_fd_(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {}

    // The first request wins; later ones (e.g. other vCPUs stopping) are ignored.
    void request(GuestExit e) {
        {
            std::lock_guard lk(mu_);
            if (stopping_.load()) return;
            exit_ = std::move(e);
            stop_locked();
        }
        cv_.notify_all();
    }
    bool stopping() const { return stopping_.load(std::memory_order_relaxed); }
    GuestExit wait() {
        std::unique_lock lk(mu_);
        cv_.wait(lk, [&] { return stopping_.load(); });
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
    GuestExit exit_;
    UniqueFd wake_fd_;
};

}  // namespace kestrel
