// The syscalls each kind of kestrel thread may make once its seccomp filter is on, as plain
// data (no libseccomp here, so the lists can be read and unit-tested on their own).
//
// The lists come from what each thread was seen calling under strace -ff (the kvm suite's
// guests on the host; a Debian guest with blk, net, vsock, rng and console in the nested test
// host) plus the paths those runs cannot reach but a guest can (each such entry says which),
// and nothing else. Arguments are checked where a register says enough: ioctl request numbers
// per thread (KVM_RUN only on vCPU threads), socket() only AF_UNIX, no PROT_EXEC mappings,
// signals only to kestrel's own threads, clone only for threads. README "Seccomp" has the
// summary; seccomp.hpp installs them.
#pragma once

#include <sys/types.h>

#include <array>
#include <cstdint>
#include <optional>
#include <string_view>
#include <vector>

namespace kestrel::seccomp {

enum class ThreadKind : uint8_t {
    Main,       // the controller (process main thread), once the VM runs
    Api,        // the API listener and its worker (cpp-httplib)
    EventLoop,  // device back-ends: io_uring, taps, vsock sockets, console, timers
    Vcpu,       // one per vCPU: KVM_RUN and synchronous PIO/MMIO dispatch
    Serial,     // the console writer thread for outputs that cannot be polled (regular files)
};
inline constexpr std::array<ThreadKind, 5> kThreadKinds{ThreadKind::Main, ThreadKind::Api,
                                                        ThreadKind::EventLoop, ThreadKind::Vcpu,
                                                        ThreadKind::Serial};

// "main", "api", "event-loop", "vcpu", "serial": the --seccomp-test values and the name in
// the violation message.
std::string_view thread_kind_name(ThreadKind k);
std::optional<ThreadKind> parse_thread_kind(std::string_view s);

// --seccomp: off (no filter), log (forbidden calls run and are logged by the kernel's audit,
// for debugging), kill (a forbidden call ends kestrel; the default).
enum class Mode : uint8_t { Off, Log, Kill };
std::string_view mode_name(Mode m);
std::optional<Mode> parse_mode(std::string_view s);

// One comparison on a syscall argument register: (arg & mask) == value. Integer arguments
// the kernel takes as int or unsigned int (fds, ioctl requests, socket domains, pids) are
// compared on their low 32 bits only, as the kernel reads them: a caller's sign extension
// neither passes nor fails a check by accident.
struct ArgCheck {
    unsigned index;  // 0-5
    uint64_t mask;
    uint64_t value;
    bool operator==(const ArgCheck&) const = default;
};

// A syscall (libseccomp's name for it) that is allowed when every check holds; several rules
// for one syscall: any of them. `fail_errno` non-zero: the call does not run and fails with
// that errno (clone3 -> ENOSYS, so glibc falls back to clone, whose flags can be checked).
struct Rule {
    std::string_view syscall;
    std::vector<ArgCheck> checks;
    int fail_errno = 0;
};
using Policy = std::vector<Rule>;

// The allow-list of `kind` in the process `self` (tgkill may only signal its threads).
Policy policy_for(ThreadKind kind, pid_t self);

// The ioctl requests `kind` may issue (the values checked on ioctl's second argument).
std::vector<unsigned long> ioctls_for(ThreadKind kind);

}  // namespace kestrel::seccomp
