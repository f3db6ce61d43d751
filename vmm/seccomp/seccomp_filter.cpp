#include "vmm/seccomp/seccomp_filter.hpp"

#include <linux/seccomp.h>
#include <seccomp.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <memory>

#include "vmm/base/fd.hpp"

namespace kestrel::seccomp {

namespace {

using Ctx = std::unique_ptr<void, decltype(&seccomp_release)>;

Result<std::vector<sock_filter>> export_bpf(scmp_filter_ctx ctx) {
    // libseccomp 2.5 exports to an fd only (seccomp_export_bpf_mem came in 2.6).
    UniqueFd fd(::memfd_create("kestrel-seccomp", MFD_CLOEXEC));
    if (!fd) return fail_errno("seccomp: memfd_create");
    if (int r = seccomp_export_bpf(ctx, fd.get()); r < 0) {
        errno = -r;
        return fail_errno("seccomp: exporting the BPF program");
    }
    off_t bytes = ::lseek(fd.get(), 0, SEEK_END);
    if (bytes <= 0 || bytes % static_cast<off_t>(sizeof(sock_filter)) != 0)
        return fail("seccomp: the exported BPF program is {} bytes, not whole instructions", bytes);
    std::vector<sock_filter> code(static_cast<size_t>(bytes) / sizeof(sock_filter));
    if (::pread(fd.get(), code.data(), static_cast<size_t>(bytes), 0) != bytes)
        return fail_errno("seccomp: reading the BPF program back");
    return code;
}

}  // namespace

Result<BpfProgram> compile(const Policy& policy, Mode mode) {
    if (mode == Mode::Off) return fail("seccomp: nothing to compile with --seccomp=off");
    Ctx ctx(seccomp_init(mode == Mode::Kill ? SCMP_ACT_TRAP : SCMP_ACT_LOG), seccomp_release);
    if (!ctx) return fail("seccomp: seccomp_init failed");
    // A syscall through another ABI would be checked against x86-64 numbers: never allow it.
    if (seccomp_attr_set(ctx.get(), SCMP_FLTATR_ACT_BADARCH, SCMP_ACT_KILL_PROCESS) < 0)
        return fail("seccomp: cannot set the bad-architecture action");
    // A binary search over syscall numbers instead of one comparison per rule in order: the
    // vCPU's KVM_RUN and the event loop's epoll_wait are not at the end of a long chain.
    if (seccomp_attr_set(ctx.get(), SCMP_FLTATR_CTL_OPTIMIZE, 2) < 0)
        return fail("seccomp: cannot select the binary-tree filter layout");
    for (const Rule& r : policy) {
        const std::string name(r.syscall);
        int nr = seccomp_syscall_resolve_name(name.c_str());
        if (nr == __NR_SCMP_ERROR) return fail("seccomp: libseccomp does not know the syscall '{}'", name);
        std::vector<scmp_arg_cmp> cmps;
        for (const ArgCheck& c : r.checks)
            cmps.push_back(c.mask == ~uint64_t{0}
                               ? scmp_arg_cmp{c.index, SCMP_CMP_EQ, c.value, 0}
                               : scmp_arg_cmp{c.index, SCMP_CMP_MASKED_EQ, c.mask, c.value});
        const uint32_t action = r.fail_errno ? SCMP_ACT_ERRNO(static_cast<uint32_t>(r.fail_errno)) : SCMP_ACT_ALLOW;
        int rc = seccomp_rule_add_exact_array(ctx.get(), action, nr, static_cast<unsigned>(cmps.size()),
                                              cmps.data());
        if (rc < 0) {
            errno = -rc;
            return fail_errno("seccomp: rule for {} ({} argument checks)", name, cmps.size());
        }
    }
    return BpfProgram{TRY(export_bpf(ctx.get()))};
}

Result<void> install(const BpfProgram& prog, Mode mode) {
    if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return fail_errno("seccomp: PR_SET_NO_NEW_PRIVS");
    sock_fprog fprog{static_cast<unsigned short>(prog.code.size()), const_cast<sock_filter*>(prog.code.data())};
    if (prog.code.empty() || prog.code.size() > BPF_MAXINSNS)
        return fail("seccomp: a filter of {} instructions cannot be loaded", prog.code.size());
    // FLAG_LOG: a trapped call also reaches the audit log (kernel.seccomp.actions_logged),
    // for when kestrel's stderr is gone.
    const unsigned flags = mode == Mode::Kill ? SECCOMP_FILTER_FLAG_LOG : 0;
    if (::syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, flags, &fprog) != 0)
        return fail_errno("seccomp: loading the filter");
    return {};
}

}  // namespace kestrel::seccomp
