#include "vmm/seccomp/seccomp.hpp"

#include <seccomp.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <ucontext.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <ctime>

#include "vmm/base/log.hpp"
#include "vmm/seccomp/seccomp_filter.hpp"

namespace kestrel::seccomp {

namespace {

Settings g_settings;
std::array<std::optional<BpfProgram>, kThreadKinds.size()> g_programs;

// Syscall names for the SIGSYS handler, which cannot ask libseccomp (it allocates).
constexpr long kMaxSyscall = 512;
constexpr size_t kNameLen = 28;
std::array<std::array<char, kNameLen>, kMaxSyscall> g_names{};

// Read by the SIGSYS handler: initial-exec TLS is a plain %fs-relative load (the default model
// for -fPIC code would go through __tls_get_addr, which is not async-signal-safe).
__attribute__((tls_model("initial-exec"))) thread_local const char* t_kind = nullptr;

// si_code of a SIGSYS the seccomp filter raised (asm-generic/siginfo.h; glibc 2.36 omits it).
constexpr int kSysSeccomp = 1;

size_t index_of(ThreadKind k) { return static_cast<size_t>(k); }

void fill_names() {
    for (long nr = 0; nr < kMaxSyscall; ++nr) {
        char* n = seccomp_syscall_resolve_num_arch(SCMP_ARCH_NATIVE, static_cast<int>(nr));
        if (!n) continue;
        std::strncpy(g_names[static_cast<size_t>(nr)].data(), n, kNameLen - 1);
        std::free(n);
    }
}

// Async-signal-safe formatting into a fixed buffer.
struct Line {
    char buf[320];
    size_t len = 0;
    void str(const char* s) {
        while (*s && len < sizeof buf) buf[len++] = *s++;
    }
    void num(uint64_t v, unsigned base) {
        char tmp[24];
        size_t n = 0;
        do {
            tmp[n++] = "0123456789abcdef"[v % base];
            v /= base;
        } while (v && n < sizeof tmp);
        if (base == 16) str("0x");
        while (n && len < sizeof buf) buf[len++] = tmp[--n];
    }
};

void on_sigsys(int, siginfo_t* si, void* uctx) {
    Line l;
    if (si->si_code != kSysSeccomp) {
        l.str("kestrel: SIGSYS not raised by seccomp (sent by another process?); exiting\n");
    } else {
        const long nr = si->si_syscall;
        const char* name = syscall_name(nr);
        const auto* gr = static_cast<ucontext_t*>(uctx)->uc_mcontext.gregs;
        l.str("kestrel: seccomp: ");
        l.str(t_kind ? t_kind : "unfiltered");
        l.str(" thread called forbidden syscall ");
        l.str(name ? name : "unknown");
        l.str("(");
        l.num(static_cast<uint64_t>(nr), 10);
        l.str(") args ");
        l.num(static_cast<uint64_t>(gr[REG_RDI]), 16);
        l.str(", ");
        l.num(static_cast<uint64_t>(gr[REG_RSI]), 16);
        l.str(", ");
        l.num(static_cast<uint64_t>(gr[REG_RDX]), 16);
        l.str("\n");
    }
    for (size_t off = 0; off < l.len;) {
        ssize_t n = ::write(STDERR_FILENO, l.buf + off, l.len - off);
        if (n <= 0) break;
        off += static_cast<size_t>(n);
    }
    ::syscall(SYS_exit_group, kExitViolation);
}

Result<void> install_handler() {
    struct sigaction sa {};
    sa.sa_sigaction = on_sigsys;
    sa.sa_flags = SA_SIGINFO;
    sigfillset(&sa.sa_mask);  // nothing (a vCPU kick) interrupts the message
    if (::sigaction(SIGSYS, &sa, nullptr) != 0) return fail_errno("seccomp: installing the SIGSYS handler");
    return {};
}

// At most 15 bytes (TASK_COMM_LEN).
const char* comm_name(ThreadKind kind) {
    switch (kind) {
    case ThreadKind::Api: return "kestrel-api";
    case ThreadKind::EventLoop: return "kestrel-evloop";
    case ThreadKind::Vcpu: return "kestrel-vcpu";
    case ThreadKind::Serial: return "kestrel-serial";
    case ThreadKind::Main: break;
    }
    return "kestrel";
}

void call_forbidden(ThreadKind kind) {
    const char* path = "/nonexistent/kestrel-seccomp-test";
    char* const argv[] = {const_cast<char*>(path), nullptr};
    char* const envp[] = {nullptr};
    long r = ::syscall(SYS_execve, path, argv, envp);
    log::warn("seccomp test: the {} thread called execve; it returned {} ({}) under --seccomp={}",
              thread_kind_name(kind), r, std::strerror(errno), mode_name(g_settings.mode));
}

}  // namespace

const char* syscall_name(long nr) {
    if (nr < 0 || nr >= kMaxSyscall) return nullptr;
    const char* n = g_names[static_cast<size_t>(nr)].data();
    return *n ? n : nullptr;
}

Result<void> configure(const Settings& s) {
    g_settings = s;
    for (auto& p : g_programs) p.reset();
    if (s.mode == Mode::Off) return {};
    const auto t0 = std::chrono::steady_clock::now();
    ::tzset();
    fill_names();
    const pid_t self = ::getpid();
    for (ThreadKind k : kThreadKinds) {
        auto prog = compile(policy_for(k, self), s.mode);
        if (!prog) return std::unexpected(context(prog.error(), fmt::format("the {} thread's filter", thread_kind_name(k))));
        g_programs[index_of(k)] = std::move(*prog);
    }
    TRY(install_handler());
    log::debug("seccomp: {} filters ({}) ready in {} us", kThreadKinds.size(), mode_name(s.mode),
               std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - t0).count());
    return {};
}

const Settings& settings() { return g_settings; }

void apply(ThreadKind kind) {
    if (g_settings.mode != Mode::Off) {
        if (kind != ThreadKind::Main) ::prctl(PR_SET_NAME, comm_name(kind), 0, 0, 0);
        sigset_t sys;
        sigemptyset(&sys);
        sigaddset(&sys, SIGSYS);
        // A blocked SIGSYS would turn the trap into a silent core-dumping kill.
        ::pthread_sigmask(SIG_UNBLOCK, &sys, nullptr);
        t_kind = thread_kind_name(kind).data();  // string literals: NUL-terminated
        const auto& prog = g_programs[index_of(kind)];
        auto r = prog ? install(*prog, g_settings.mode) : fail("seccomp: configure() was not called");
        if (!r) {
            log::error("seccomp: cannot put the {} thread's filter on: {}", thread_kind_name(kind), r.error().what());
            ::_exit(1);
        }
    }
    if (g_settings.test_forbidden == kind) call_forbidden(kind);
}

}  // namespace kestrel::seccomp
