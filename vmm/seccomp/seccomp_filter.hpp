// A Policy (seccomp_policy.hpp) compiled to a classic-BPF seccomp program with libseccomp,
// and that program installed on the calling thread.
#pragma once

#include <linux/filter.h>

#include <vector>

#include "vmm/base/error.hpp"
#include "vmm/seccomp/seccomp_policy.hpp"

namespace kestrel::seccomp {

struct BpfProgram {
    std::vector<sock_filter> code;
};

// Every call the policy does not allow gets SECCOMP_RET_TRAP (Kill: the SIGSYS handler in
// seccomp.cpp names it and ends kestrel) or SECCOMP_RET_LOG (Log: it runs and the kernel's
// audit logs it). A call from another ABI (x32, int 0x80) kills the process outright. Fails
// if a syscall name is unknown to libseccomp or a rule cannot be expressed exactly.
Result<BpfProgram> compile(const Policy& policy, Mode mode);

// Installs `prog` on the calling thread only (no TSYNC: each thread gets its own list; threads
// it creates later inherit it). Sets no_new_privs first, which seccomp requires without
// CAP_SYS_ADMIN (kestrel never execs, so it changes nothing else).
Result<void> install(const BpfProgram& prog, Mode mode);

}  // namespace kestrel::seccomp
