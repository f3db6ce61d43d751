// kestrel's seccomp filters, process-wide: the --seccomp mode, every thread kind's filter
// compiled once on the main thread before any thread starts, and apply(), the one call each
// thread makes first thing to put its own filter on (seccomp_policy.hpp has the lists).
//
// Where each filter goes on:
//  - vCPU, event loop, serial writer: first thing on the thread (vcpu_loop.cpp,
//    event_loop.cpp, serial_sink.cpp).
//  - API: the listener right after it has started its one worker, the worker as its first
//    task (api_server.cpp), so neither may create threads.
//  - main: once the VM runs (controller.cpp, start_vm). Building the VM opens files and
//    devices, maps guest RAM, creates KVM fds and starts every other thread, and threads
//    inherit their creator's filter (the stricter of the two would win), so the main thread
//    can only be narrowed after that. Before InstanceStart it runs no filter; it then only
//    acts on requests the (filtered) API thread has already parsed.
//
// A violation with `kill` (SECCOMP_RET_TRAP, not KILL_PROCESS): the SIGSYS handler writes
//   kestrel: seccomp: <thread> thread called forbidden syscall <name>(<nr>) args A0, A1, A2
// to stderr with write(2) only (async-signal-safe; names come from a table filled at
// configure()) and ends the process with exit code 128 + SIGSYS (159) — the code a shell shows
// for a death by SIGSYS. Chosen over KILL_PROCESS because that one says nothing on kestrel's
// stderr: its only trace is an audit record, which needs audit enabled and a readable kernel
// log; here the record is written too (SECCOMP_FILTER_FLAG_LOG). A thread cannot undo the trap:
// rt_sigaction is in no list, and the trapped call never runs either way.
//
// Test hook (--seccomp-test=KIND, hidden from --help): right after KIND's filter goes on, that
// thread calls execve("/nonexistent/kestrel-seccomp-test") — forbidden everywhere, harmless
// where it runs (off, log: it fails with ENOENT, and a warning says it ran). Nothing else of it
// is on any thread's path.
#pragma once

#include <signal.h>

#include <optional>

#include "vmm/base/error.hpp"
#include "vmm/seccomp/seccomp_policy.hpp"

namespace kestrel::seccomp {

inline constexpr int kExitViolation = 128 + SIGSYS;

struct Settings {
    Mode mode = Mode::Off;
    std::optional<ThreadKind> test_forbidden;  // --seccomp-test
};

// Once, on the main thread, before kestrel starts any thread: keeps the settings and, unless
// off, compiles every kind's filter, installs the SIGSYS handler and initialises what glibc
// would otherwise set up lazily behind a filter (the time zone, read from /etc/localtime on
// the first gmtime_r/localtime_r — the CMOS RTC's first read on a vCPU).
Result<void> configure(const Settings& s);
const Settings& settings();

// First thing on a thread of `kind`: names the thread (kestrel-vcpu, -evloop, -api, -serial:
// shown by ps -L and in audit records; not the main thread, whose name is the process's),
// lets SIGSYS through, installs the filter. A filter that cannot be installed when one was
// asked for ends kestrel (exit 1) with the reason: it never runs unfiltered by mistake.
void apply(ThreadKind kind);

// The name of syscall `nr` from the table configure() filled, or nullptr.
const char* syscall_name(long nr);

}  // namespace kestrel::seccomp
