#include "vmm/seccomp/seccomp.hpp"

#include <fcntl.h>
#include <linux/kvm.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <doctest/doctest.h>

#include <algorithm>
#include <cstdio>
#include <functional>
#include <string>

#include "vmm/seccomp/seccomp_filter.hpp"

using namespace kestrel;
using namespace kestrel::seccomp;

namespace {

struct ChildResult {
    int exit_code = -1;  // -1: killed by a signal
    int signal = 0;
    std::string err;     // its stderr and stdout
};

// Runs `body` in a forked child whose stderr and stdout are captured; the child ends with _exit(0) after
// it, so nothing of doctest runs there. Filters are per process, so the test runner itself
// never gets one.
ChildResult in_child(const std::function<void()>& body) {
    int p[2];
    REQUIRE(::pipe2(p, O_CLOEXEC) == 0);
    std::fflush(stdout);  // else the child would write doctest's buffered output again
    pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        ::dup2(p[1], STDOUT_FILENO);  // spdlog's default logger (no kestrel main here)
        ::dup2(p[1], STDERR_FILENO);
        body();
        ::_exit(0);
    }
    ::close(p[1]);
    ChildResult r;
    char buf[4096];
    for (ssize_t n; (n = ::read(p[0], buf, sizeof buf)) > 0;) r.err.append(buf, static_cast<size_t>(n));
    ::close(p[0]);
    int status = 0;
    REQUIRE(::waitpid(pid, &status, 0) == pid);
    if (WIFEXITED(status)) r.exit_code = WEXITSTATUS(status);
    else if (WIFSIGNALED(status)) r.signal = WTERMSIG(status);
    return r;
}

void filtered(ThreadKind kind, Mode mode = Mode::Kill) {
    if (!configure({mode, std::nullopt})) ::_exit(90);
    apply(kind);
}

bool has_rule(const Policy& p, std::string_view name) {
    return std::any_of(p.begin(), p.end(), [&](const Rule& r) { return r.syscall == name; });
}

long try_execve() {
    const char* path = "/nonexistent/kestrel-seccomp-unit-test";
    char* const argv[] = {const_cast<char*>(path), nullptr};
    char* const envp[] = {nullptr};
    return ::syscall(SYS_execve, path, argv, envp);
}

}  // namespace

TEST_CASE("seccomp: thread kinds and modes parse from their names") {
    for (ThreadKind k : kThreadKinds) CHECK(parse_thread_kind(thread_kind_name(k)) == k);
    CHECK(parse_thread_kind("event-loop") == ThreadKind::EventLoop);
    CHECK_FALSE(parse_thread_kind("vcpu0").has_value());
    CHECK(parse_mode("off") == Mode::Off);
    CHECK(parse_mode("log") == Mode::Log);
    CHECK(parse_mode("kill") == Mode::Kill);
    CHECK_FALSE(parse_mode("trap").has_value());
}

TEST_CASE("seccomp: every thread's policy compiles in log and kill mode") {
    for (ThreadKind k : kThreadKinds) {
        for (Mode m : {Mode::Log, Mode::Kill}) {
            auto prog = compile(policy_for(k, ::getpid()), m);
            INFO(thread_kind_name(k), " ", mode_name(m));
            REQUIRE(prog.has_value());
            CHECK(prog->code.size() > 10);
        }
    }
    CHECK_FALSE(compile(policy_for(ThreadKind::Vcpu, ::getpid()), Mode::Off).has_value());
    CHECK_FALSE(compile({Rule{"no_such_syscall", {}, 0}}, Mode::Kill).has_value());
}

TEST_CASE("seccomp: no thread may exec, fork, trace, mount, load code or change its signal handlers") {
    for (ThreadKind k : kThreadKinds) {
        const Policy p = policy_for(k, ::getpid());
        INFO(thread_kind_name(k));
        for (auto bad : {"execve", "execveat", "fork", "vfork", "ptrace", "process_vm_writev",
                         "process_vm_readv", "mount", "umount2", "setns", "unshare", "bpf",
                         "perf_event_open", "init_module", "finit_module", "kexec_load",
                         "rt_sigaction", "sigaltstack", "chroot", "pivot_root", "setuid",
                         "keyctl", "userfaultfd", "memfd_create", "personality"})
            CHECK_MESSAGE(!has_rule(p, bad), bad);
        // Every call a thread needs to end: the exit path and the SIGSYS message itself.
        for (auto need : {"exit", "exit_group", "write", "futex", "rt_sigreturn", "munmap", "madvise"})
            CHECK_MESSAGE(has_rule(p, need), need);
        for (const Rule& r : p) {
            // clone only with CLONE_THREAD; socket only AF_UNIX (and, on the controller whose
            // thread sends a live migration to tcp:, AF_INET/AF_INET6); mmap/mprotect never PROT_EXEC.
            if (r.syscall == "clone") CHECK(r.checks == std::vector{ArgCheck{0, CLONE_THREAD, CLONE_THREAD}});
            if (r.syscall == "socket") {
                const bool inet = r.checks == std::vector{ArgCheck{0, 0xffffffff, AF_INET}} ||
                                  r.checks == std::vector{ArgCheck{0, 0xffffffff, AF_INET6}};
                CHECK((r.checks == std::vector{ArgCheck{0, 0xffffffff, AF_UNIX}} || (inet && k == ThreadKind::Main)));
            }
            if (r.syscall == "mmap" || r.syscall == "mprotect")
                CHECK(r.checks == std::vector{ArgCheck{2, PROT_EXEC, 0}});
            if (r.syscall == "tgkill")
                CHECK(r.checks == std::vector{ArgCheck{0, 0xffffffff, static_cast<uint64_t>(::getpid())}});
            if (r.syscall == "ioctl") REQUIRE(r.checks.size() == 1);
        }
    }
}

TEST_CASE("seccomp: KVM_RUN only on vCPU threads; the API and serial threads issue no ioctl") {
    auto has = [](ThreadKind k, unsigned long req) {
        auto v = ioctls_for(k);
        return std::find(v.begin(), v.end(), req) != v.end();
    };
    CHECK(has(ThreadKind::Vcpu, KVM_RUN));
    for (ThreadKind k : {ThreadKind::Main, ThreadKind::Api, ThreadKind::EventLoop, ThreadKind::Serial})
        CHECK_FALSE(has(k, KVM_RUN));
    CHECK(has(ThreadKind::Main, KVM_KVMCLOCK_CTRL));
    CHECK_FALSE(has(ThreadKind::Vcpu, KVM_KVMCLOCK_CTRL));
    CHECK(ioctls_for(ThreadKind::Api).empty());
    CHECK(ioctls_for(ThreadKind::Serial).empty());
    CHECK_FALSE(has_rule(policy_for(ThreadKind::Api, ::getpid()), "ioctl"));
}

// The filters at work, in forked children: the trap's message names thread and syscall and
// the process ends with 128 + SIGSYS; what is allowed runs.

TEST_CASE("seccomp: a forbidden ioctl on the API thread ends the process with the thread and syscall named") {
    auto r = in_child([] {
        filtered(ThreadKind::Api);
        ::ioctl(-1, KVM_RUN, 0);
    });
    CHECK(r.exit_code == kExitViolation);
    CHECK(r.err.find("kestrel: seccomp: api thread called forbidden syscall ioctl(16) args ") != std::string::npos);
    CHECK(r.err.find(", 0xae80, ") != std::string::npos);  // the request, for debugging
}

TEST_CASE("seccomp: a vCPU thread may KVM_RUN but not execve, even with every signal blocked") {
    auto r = in_child([] {
        sigset_t all;
        sigfillset(&all);
        ::pthread_sigmask(SIG_BLOCK, &all, nullptr);  // as the serial writer starts
        filtered(ThreadKind::Vcpu);
        if (::ioctl(-1, KVM_RUN, 0) != -1 || errno != EBADF) ::_exit(91);
        try_execve();
        ::_exit(92);
    });
    CHECK(r.exit_code == kExitViolation);
    CHECK(r.err.find("vcpu thread called forbidden syscall execve(59)") != std::string::npos);
}

TEST_CASE("seccomp: the event loop may open unix sockets only") {
    auto r = in_child([] {
        filtered(ThreadKind::EventLoop);
        int u = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (u < 0) ::_exit(91);
        ::close(u);
        ::socket(AF_INET, SOCK_STREAM, 0);
        ::_exit(92);
    });
    CHECK(r.exit_code == kExitViolation);
    CHECK(r.err.find("event-loop thread called forbidden syscall socket(41) args 0x2, ") != std::string::npos);
}

TEST_CASE("seccomp: no thread may map executable memory") {
    auto r = in_child([] {
        filtered(ThreadKind::Serial);
        void* rw = ::mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (rw == MAP_FAILED) ::_exit(91);
        ::mprotect(rw, 4096, PROT_READ | PROT_EXEC);
        ::_exit(92);
    });
    CHECK(r.exit_code == kExitViolation);
    CHECK(r.err.find("serial thread called forbidden syscall mprotect(10)") != std::string::npos);
}

TEST_CASE("seccomp: stdio may size a stream's buffer (fstat of an fd) on any thread, not stat a path") {
    auto r = in_child([] {
        filtered(ThreadKind::Vcpu);
        std::printf("first buffered write\n");  // glibc stats stdout here
        std::fflush(stdout);
        struct stat st {};
        if (::fstat(STDERR_FILENO, &st) != 0) ::_exit(91);
        if (::fstatat(STDERR_FILENO, "", &st, AT_EMPTY_PATH) != 0) ::_exit(92);
        ::fstatat(AT_FDCWD, "/etc/passwd", &st, 0);
        ::_exit(93);
    });
    CHECK(r.exit_code == kExitViolation);
    CHECK(r.err.find("first buffered write") != std::string::npos);
    CHECK(r.err.find("vcpu thread called forbidden syscall newfstatat(262)") != std::string::npos);
}

TEST_CASE("seccomp: signals only to kestrel's own threads") {
    auto r = in_child([] {
        filtered(ThreadKind::Vcpu);
        if (::syscall(SYS_tgkill, ::getpid(), ::gettid(), 0) != 0) ::_exit(91);
        ::syscall(SYS_tgkill, 1, 1, 0);
        ::_exit(92);
    });
    CHECK(r.exit_code == kExitViolation);
    CHECK(r.err.find("vcpu thread called forbidden syscall tgkill(234) args 0x1, ") != std::string::npos);
}

TEST_CASE("seccomp: the main thread may create threads (clone3 says ENOSYS) but never fork") {
    auto r = in_child([] {
        filtered(ThreadKind::Main);
        if (::syscall(SYS_clone3, nullptr, 0) != -1 || errno != ENOSYS) ::_exit(91);
        long pid = ::syscall(SYS_clone, SIGCHLD, 0, 0, 0, 0);
        if (pid == 0) ::_exit(0);  // only if the filter let the fork through
        ::_exit(92);
    });
    CHECK(r.exit_code == kExitViolation);
    CHECK(r.err.find("main thread called forbidden syscall clone(56)") != std::string::npos);
}

TEST_CASE("seccomp: log mode lets a forbidden call run") {
    auto r = in_child([] {
        filtered(ThreadKind::Api, Mode::Log);
        if (try_execve() != -1 || errno != ENOENT) ::_exit(91);
        ::_exit(0);
    });
    CHECK(r.exit_code == 0);
    CHECK(r.err.empty());
}

TEST_CASE("seccomp: --seccomp-test makes the named thread call execve") {
    auto killed = in_child([] {
        if (!configure({Mode::Kill, ThreadKind::Serial})) ::_exit(90);
        apply(ThreadKind::Serial);
        ::_exit(92);
    });
    CHECK(killed.exit_code == kExitViolation);
    CHECK(killed.err.find("kestrel: seccomp: serial thread called forbidden syscall execve(59)") != std::string::npos);

    auto off = in_child([] {
        if (!configure({Mode::Off, ThreadKind::Serial})) ::_exit(90);
        apply(ThreadKind::Vcpu);  // not the thread named: no call
        apply(ThreadKind::Serial);
        ::_exit(0);
    });
    CHECK(off.exit_code == 0);
    CHECK(off.err.find("seccomp test: the serial thread called execve; it returned -1") != std::string::npos);
    CHECK(off.err.find("vcpu") == std::string::npos);
}
