// seccomp-syscall-cost: nanoseconds per syscall on kestrel's hot paths without a filter and
// under the vCPU's and the event loop's filters (each in a forked child, 1 M calls each, on
// fds that make the call return at once): what one call pays for its filter. Calls the
// filter allows for every argument skip the BPF program (the kernel's seccomp action cache)
// but still take the slow syscall entry; ioctl, whose request is checked, runs it.
// Run by tools/seccomp/bench-filter.sh. Never a pass/fail on speed.
#include <linux/kvm.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <optional>
#include <string_view>

#include "vmm/seccomp/seccomp_filter.hpp"

using namespace kestrel::seccomp;

namespace {

template <class F>
double ns_per_call(F f, int n = 1000000) {
    auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < n; ++i) f();
    return std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - t0).count() / n;
}

void measure(std::optional<ThreadKind> kind) {
    pid_t pid = ::fork();
    if (pid != 0) {
        int status;
        ::waitpid(pid, &status, 0);
        return;
    }
    int efd = ::eventfd(0, EFD_NONBLOCK);
    int ep = ::epoll_create1(0);
    if (kind) {
        auto prog = compile(policy_for(*kind, ::getpid()), Mode::Kill);
        if (!prog || !install(*prog, Mode::Kill)) ::_exit(1);
    }
    // Each thread kind's own ioctl: KVM_RUN on a vCPU, KVM_SIGNAL_MSI on the event loop.
    const unsigned long req = kind == ThreadKind::EventLoop ? KVM_SIGNAL_MSI : KVM_RUN;
    uint64_t v;
    epoll_event evs[4];
    double ioctl_ns = ns_per_call([&] { ::ioctl(-1, req, 0); });
    double read_ns = ns_per_call([&] { [[maybe_unused]] auto r = ::read(efd, &v, sizeof v); });
    double uring_ns = ns_per_call([] { ::syscall(SYS_io_uring_enter, -1, 0, 0, 0, nullptr, 0); });
    double epoll_ns = kind == ThreadKind::Vcpu ? 0 : ns_per_call([&] { ::epoll_wait(ep, evs, 4, 0); });
    const std::string_view label = kind ? thread_kind_name(*kind) : "no filter";
    std::printf("%-18.*s ioctl %6.1f   read(eventfd) %6.1f   io_uring_enter %6.1f   epoll_wait %6.1f ns\n",
                static_cast<int>(label.size()), label.data(), ioctl_ns, read_ns, uring_ns, epoll_ns);
    std::fflush(stdout);
    ::_exit(0);
}

}  // namespace

int main() {
    for (int round = 0; round < 3; ++round) {
        measure(std::nullopt);
        measure(ThreadKind::Vcpu);
        measure(ThreadKind::EventLoop);
    }
}
