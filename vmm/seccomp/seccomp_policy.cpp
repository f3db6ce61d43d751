#include "vmm/seccomp/seccomp_policy.hpp"

#include <fcntl.h>
#include <linux/fs.h>
#include <linux/if_tun.h>
#include <linux/kvm.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <termios.h>

#include <cerrno>

#include "vmm/kvm/uapi_flex.hpp"

namespace kestrel::seccomp {

namespace {

constexpr uint64_t kLow32 = 0xffff'ffff;

Rule allow(std::string_view name) { return Rule{name, {}, 0}; }
Rule allow_if(std::string_view name, std::vector<ArgCheck> checks) { return Rule{name, std::move(checks), 0}; }
ArgCheck eq32(unsigned index, uint64_t value) { return ArgCheck{index, kLow32, value & kLow32}; }

void add(Policy& p, std::initializer_list<std::string_view> names) {
    for (auto n : names) p.push_back(allow(n));
}

// What any kestrel thread needs to run C++ at all, log, and end: memory (glibc malloc with
// one arena grows the heap with brk and maps big blocks; freeing may unmap or madvise; a
// thread's exit madvises its stack away), futexes (mutexes, condition variables, joins),
// clocks (the vDSO falls back to the syscall on clock sources it cannot read), logging to
// stderr, the kick/pause signals' return path, and the exits. tgkill is limited to this
// process (vCPU kicks from the controller, abort() on one's own thread).
void base(Policy& p, pid_t self) {
    add(p, {"brk", "munmap", "mremap", "madvise", "futex", "sched_yield", "rt_sigreturn",
            "rt_sigprocmask", "restart_syscall", "clock_gettime", "clock_getres", "gettimeofday",
            "clock_nanosleep", "nanosleep", "getpid", "gettid", "write", "close", "exit",
            "exit_group"});
    // W^X: nothing in kestrel maps or makes memory executable after start-up (the loader has
    // mapped every library before main()).
    p.push_back(allow_if("mmap", {ArgCheck{2, PROT_EXEC, 0}}));
    p.push_back(allow_if("mprotect", {ArgCheck{2, PROT_EXEC, 0}}));
    p.push_back(allow_if("tgkill", {eq32(0, static_cast<uint64_t>(self))}));
    // stdio's first write to a buffered stream (PUT /logger's log file: spdlog writes it with
    // fwrite, and its first line may come from any thread) stats the stream's fd to size the
    // buffer: fstat, or newfstatat(fd, "", AT_EMPTY_PATH) as glibc 2.36 spells it.
    p.push_back(allow("fstat"));
    p.push_back(allow_if("newfstatat", {ArgCheck{3, AT_EMPTY_PATH, AT_EMPTY_PATH}}));
}

void ioctls(Policy& p, ThreadKind kind) {
    for (unsigned long req : ioctls_for(kind)) p.push_back(allow_if("ioctl", {eq32(1, req)}));
}

// Host I/O of the virtio back-ends: io_uring for blk and net (submits and reaps; the kernel's
// io-wq workers are kernel threads), eventfds and epoll registrations, the vsock unix
// sockets (connect to PATH_P for a guest's connection, byte streams both ways), virtio-rng's
// getrandom, and the rate limiters' timerfds. Both the event loop and vCPU threads run these:
// a queue notification arrives through an ioeventfd on the event loop, or as an MMIO exit on
// the vCPU when no ioeventfd covers the notify address (a guest that moved BAR0 and whose
// re-registration failed), and device activation and reset run on the vCPU that wrote the
// status register.
void device_io(Policy& p) {
    add(p, {"read", "readv", "writev", "io_uring_setup", "io_uring_enter", "io_uring_register",
            "eventfd2", "epoll_ctl", "poll", "ppoll", "getrandom", "connect", "sendto",
            "sendmsg", "recvfrom", "shutdown", "timerfd_settime", "timerfd_gettime"});
    p.push_back(allow_if("socket", {eq32(0, AF_UNIX)}));
}

Policy vcpu(pid_t self) {
    Policy p;
    base(p, self);
    device_io(p);
    ioctls(p, ThreadKind::Vcpu);
    return p;
}

Policy event_loop(pid_t self) {
    Policy p;
    base(p, self);
    device_io(p);
    add(p, {"epoll_wait", "epoll_pwait", "accept4", "accept",
            // console output written without SIGPIPE (serial_sink.cpp: write_no_sigpipe)
            "rt_sigpending", "rt_sigtimedwait"});
    ioctls(p, ThreadKind::EventLoop);
    return p;
}

// cpp-httplib: the listener accepts (accept, then per-socket timeouts) and hands the socket
// to its one worker, which polls, reads, answers, and closes; a request goes to the
// controller through RequestQueue (an eventfd write, then a futex wait for the answer).
// Neither creates threads once the worker runs (api_server.cpp installs the filter after).
Policy api(pid_t self) {
    Policy p;
    base(p, self);
    add(p, {"accept", "accept4", "setsockopt", "getsockopt", "getsockname", "getpeername",
            "poll", "ppoll", "read", "recvfrom", "sendto", "writev", "shutdown"});
    return p;
}

Policy serial(pid_t self) {
    Policy p;
    base(p, self);
    add(p, {"poll", "ppoll", "read", "rt_sigpending", "rt_sigtimedwait"});
    return p;
}

// The controller once the VM runs: API requests (which may open files: GET /vm/info reads
// /proc/self/status, a drive or metrics file named by a request), pause/resume (kicks,
// KVM_KVMCLOCK_CTRL, eventfds), signals, and the teardown (joins, console flush, KVM
// deregistrations, unmapping guest RAM, removing the API socket). It never forks or execs;
// a thread it might start is a thread (clone with CLONE_THREAD; clone3's flags sit in memory
// a filter cannot read, so it fails with ENOSYS and glibc falls back to clone).
Policy main_thread(pid_t self) {
    Policy p;
    base(p, self);
    device_io(p);
    add(p, {"epoll_wait", "epoll_pwait",
            // files a request names (a drive's new image: open, size, QEMU-style OFD locks;
            // the metrics file), /proc/self/{status,fd} and getrusage for GET /vm/info and
            // the metrics; a device state file written beside its final name and renamed
            // over it (PUT /vm/device-state/save, /snapshot/create; a snapshot's memory file
            // is written sparse: pwrite at each non-zero run, ftruncate to its size)
            "openat", "stat", "statx", "lseek", "fcntl", "getdents64",
            "readlink", "fsync", "fdatasync", "dup", "unlink", "unlinkat", "getrusage",
            "rename", "renameat", "renameat2", "pwrite64", "ftruncate",
            // signals (signalfd) and the serial output's SIGPIPE-free writes at exit
            "rt_sigpending", "rt_sigtimedwait",
            // a thread started from here runs these before its own code
            "set_robust_list", "rseq",
            "timerfd_create"});  // a rate limiter a PATCH adds at run time
    p.push_back(allow("newfstatat"));  // by path: is a new image the same file as another drive's?
    // PUT /migrate to tcp:HOST:PORT (its thread starts from here and keeps this filter), and
    // the migration socket's send/receive time limits
    p.push_back(allow_if("socket", {eq32(0, AF_INET)}));
    p.push_back(allow_if("socket", {eq32(0, AF_INET6)}));
    p.push_back(allow("setsockopt"));
    p.push_back(allow_if("clone", {ArgCheck{0, CLONE_THREAD, CLONE_THREAD}}));
    p.push_back(Rule{"clone3", {}, ENOSYS});
    ioctls(p, ThreadKind::Main);
    return p;
}

}  // namespace

std::string_view thread_kind_name(ThreadKind k) {
    switch (k) {
    case ThreadKind::Main: return "main";
    case ThreadKind::Api: return "api";
    case ThreadKind::EventLoop: return "event-loop";
    case ThreadKind::Vcpu: return "vcpu";
    case ThreadKind::Serial: return "serial";
    }
    return "?";
}

std::optional<ThreadKind> parse_thread_kind(std::string_view s) {
    for (auto k : kThreadKinds)
        if (thread_kind_name(k) == s) return k;
    return std::nullopt;
}

std::string_view mode_name(Mode m) {
    switch (m) {
    case Mode::Off: return "off";
    case Mode::Log: return "log";
    case Mode::Kill: return "kill";
    }
    return "?";
}

std::optional<Mode> parse_mode(std::string_view s) {
    for (auto m : {Mode::Off, Mode::Log, Mode::Kill})
        if (mode_name(m) == s) return m;
    return std::nullopt;
}

std::vector<unsigned long> ioctls_for(ThreadKind kind) {
    switch (kind) {
    case ThreadKind::Vcpu:
        return {KVM_RUN,
                KVM_GET_REGS, KVM_GET_SREGS,          // the registers in a stop message
                KVM_SIGNAL_MSI, KVM_IRQ_LINE,         // IOAPIC pins (split irqchip) / --pit lines
                kvm::uapi::kSetGsiRouting, KVM_IRQFD, // the guest programs MSI-X vectors
                KVM_IOEVENTFD,                        // the guest moves a BAR
                TUNSETOFFLOAD};                       // virtio-net activation: acked offloads
    case ThreadKind::EventLoop:
        return {KVM_SIGNAL_MSI, KVM_IRQ_LINE};        // console input raises the UART's IRQ
    case ThreadKind::Main:
        return {KVM_KVMCLOCK_CTRL,                    // pause
                KVM_IRQFD, KVM_IOEVENTFD,             // teardown: deregistrations
                KVM_SIGNAL_MSI, KVM_IRQ_LINE,         // SendCtrlAltDel: the i8042's IRQ
                TCGETS, TCSETS,                       // the raw terminal restored at exit
                BLKGETSIZE64,                         // a drive's new image, a block device
                // PUT /vm/device-state/save|load on a paused VM: the vCPUs' state, kvm-clock
                KVM_GET_MP_STATE, KVM_SET_MP_STATE, KVM_GET_REGS, KVM_SET_REGS, KVM_GET_SREGS,
                KVM_SET_SREGS, kvm::uapi::kGetXsave, kvm::uapi::kSetXsave, KVM_GET_XCRS, KVM_SET_XCRS,
                KVM_GET_DEBUGREGS, KVM_SET_DEBUGREGS, KVM_GET_LAPIC, KVM_SET_LAPIC, kvm::uapi::kGetMsrs,
                kvm::uapi::kSetMsrs, kvm::uapi::kGetMsrIndexList, KVM_GET_VCPU_EVENTS, KVM_SET_VCPU_EVENTS,
                KVM_GET_CLOCK, KVM_SET_CLOCK,
                // ... and the virtio functions: restored MSI-X vectors get GSI routes, a
                // restored virtio-net is activated again with the offloads its driver acked
                kvm::uapi::kSetGsiRouting, TUNSETOFFLOAD,
                KVM_SET_USER_MEMORY_REGION,           // PUT /migrate: the dirty log on, then off
                KVM_GET_IRQCHIP, KVM_SET_IRQCHIP, KVM_GET_PIT2, KVM_SET_PIT2,  // --pit's state
                KVM_GET_DIRTY_LOG,                    // PUT /snapshot/create: the pages a Diff holds
                KVM_CHECK_EXTENSION,                  // a saved state: KVM_CAP_XSAVE2's size
                // a failed migration attaches the taps it handed over again (Tap::open_by_name)
                SIOCGIFINDEX, TUNSETIFF, TUNSETVNETHDRSZ};
    case ThreadKind::Api:
    case ThreadKind::Serial:
        return {};
    }
    return {};
}

Policy policy_for(ThreadKind kind, pid_t self) {
    switch (kind) {
    case ThreadKind::Main: return main_thread(self);
    case ThreadKind::Api: return api(self);
    case ThreadKind::EventLoop: return event_loop(self);
    case ThreadKind::Vcpu: return vcpu(self);
    case ThreadKind::Serial: return serial(self);
    }
    return {};
}

}  // namespace kestrel::seccomp
