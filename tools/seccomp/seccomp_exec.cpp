// seccomp-exec: runs a command under one kestrel thread kind's seccomp filter, to measure
// what the filter costs the device benchmarks (tools/seccomp/bench-filter.sh). blk-bench and
// net-bench drive the real device code from a harness that has none of kestrel's threads, so
// no filter would be on there otherwise.
//
// The filter is the kind's allow-list (vmm/seccomp/seccomp_policy.cpp) in log mode: every call
// the list allows costs what it costs inside kestrel, and the rest (the loader mapping the
// program, the harness's set-up) still runs and is only logged, so the command works unchanged.
// Filters outlive execve (no_new_privs is set), and its threads inherit them.
//
// usage: seccomp-exec KIND COMMAND [ARGS...]    KIND: vcpu, event-loop, api, serial, main
#include <unistd.h>

#include <cstdio>
#include <cstring>

#include "vmm/seccomp/seccomp_filter.hpp"

using namespace kestrel::seccomp;

int main(int argc, char** argv) {
    if (argc < 3) {
        std::fprintf(stderr, "usage: seccomp-exec vcpu|event-loop|api|serial|main COMMAND [ARGS...]\n");
        return 2;
    }
    auto kind = parse_thread_kind(argv[1]);
    if (!kind) {
        std::fprintf(stderr, "seccomp-exec: unknown thread kind '%s'\n", argv[1]);
        return 2;
    }
    auto prog = compile(policy_for(*kind, ::getpid()), Mode::Log);
    if (!prog) {
        std::fprintf(stderr, "seccomp-exec: %s\n", prog.error().what().c_str());
        return 1;
    }
    if (auto r = install(*prog, Mode::Log); !r) {
        std::fprintf(stderr, "seccomp-exec: %s\n", r.error().what().c_str());
        return 1;
    }
    ::execvp(argv[2], argv + 2);
    std::fprintf(stderr, "seccomp-exec: %s: %s\n", argv[2], std::strerror(errno));
    return 127;
}
