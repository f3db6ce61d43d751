// Making a container's processes: the rootfs mounts in the agent's namespace, the stdio
// pipes or pty, the container init (a new mount/UTS/IPC/PID namespace set up from the OCI
// spec) and exec'd processes that join it. Every process stops before exec and waits for
// `start` on its sync socket (SOCK_SEQPACKET, close-on-exec):
//   child -> agent  'R'            ready (its pid arrives in SCM_CREDENTIALS)
//   child -> agent  'E' + message  setup or exec failed; the child exits
//   agent -> child  'S'            exec now; the socket closing (CLOEXEC) says exec worked
//
// The container's PID 1 is a copy of the agent (the "stub") that forks the user's process
// and reaps; it exits with the user process's status (code, or 128 + signal), which kills
// what is left in the namespace. The user's process is not PID 1 so it gets signals the
// ordinary way (a namespace's init ignores those it has no handler for, pid_namespaces(7)).
#pragma once

#include <sys/types.h>

#include <string>

#include "cni-shim/agent/request.hpp"
#include "cni-shim/agent/sys.hpp"

namespace kestrel::agent {

// Where one container's files live: <state>/<id>/{rootfs,lower,rw}.
struct RootfsMounts {
    std::string dir;
    std::string rootfs;
    bool lower = false;  // <dir>/lower is mounted (device under an overlay)
    bool rw = false;     // <dir>/rw is a tmpfs (overlay upper + work)
};

// Mounts the rootfs as asked (bind, device, device + overlay); undoes itself on failure.
Result<RootfsMounts> mount_rootfs(const std::string& state_dir, const std::string& id, const Rootfs& r);
// Detaches every mount of the container and removes its directories (errors are logged).
void unmount_rootfs(const RootfsMounts& m);

// Writes every kestrel-copy mount's files under <m.dir>/copies/<n> and points the mount's
// source there (a file, or a directory of them), so spawn_init binds it like a guest path.
Result<void> write_copies(const RootfsMounts& m, std::vector<Mount>& mounts);

// Waits (up to 10 s) until every kestrel-drive mount's device shows its drive_size: the
// shim swapped the drive in just before `create`, and the guest learns the new capacity
// asynchronously (see wait_for_size in spawn.cpp).
Result<void> wait_for_drives(const std::vector<Mount>& mounts);

// Makes every kestrel-pod-volume mount's directory, <state_dir>/+pod/<name> ('+' is not in a
// container id, so no container's directory can be it), unless an earlier container of the
// pod made it, and points the mount's source there.
Result<void> prepare_pod_volumes(const std::string& state_dir, std::vector<Mount>& mounts);

// The agent's ends of a process's stdio (non-blocking) and the child's ends.
struct StdioFds {
    UniqueFd in_w;       // stdin pipe, or a dup of the pty master
    UniqueFd out_r;      // stdout pipe, or the pty master
    UniqueFd err_r;
    UniqueFd child_in, child_out, child_err;  // pty slave / pipe ends / /dev/null
};
Result<StdioFds> make_stdio(const Stdio& s);

struct Spawned {
    pid_t wait_pid = -1;  // the child the agent reaps (the stub for an init)
    pid_t pid = -1;       // the user's process, in the agent's pid namespace
    UniqueFd sync;
};

// The container init: clone into new namespaces, set up mounts and hostname, pivot_root,
// fork the user's process and wait until it reports ready. `cgroup_procs` may be -1.
Result<Spawned> spawn_init(const std::string& rootfs, const Spec& spec, StdioFds& stdio, bool terminal,
                           int cgroup_procs);

// The namespaces an exec joins, opened from the init stub's /proc/<pid>/ns.
struct Namespaces {
    UniqueFd pid, mnt, uts, ipc;
};
Result<Namespaces> open_namespaces(pid_t stub);

// An extra process in the container's namespaces and cgroup. `own_pidns` is the agent's.
Result<Spawned> spawn_exec(const Namespaces& ns, int own_pidns, const Process& p, StdioFds& stdio, bool terminal,
                           int cgroup_procs);

// Tells a ready process to exec and waits (bounded) for the result.
Result<void> release(Spawned& s);

}  // namespace kestrel::agent
