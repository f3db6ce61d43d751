// Container processes (see spawn.hpp). Code after fork()/clone() runs in a single-threaded
// copy of the agent: it reports failures on the sync socket and leaves with _exit().
#include "cni-shim/agent/spawn.hpp"

#include <fcntl.h>
#include <grp.h>
#include <linux/openat2.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <tuple>
#include <vector>

namespace kestrel::agent {
namespace {

// How long create/exec/start wait for a child's answer on the sync socket. The child only
// does mounts and an exec meanwhile; a child that takes longer is killed and reported.
constexpr int kSyncTimeoutMs = 10000;

// ---- in the child ---------------------------------------------------------------------

[[noreturn]] void die(int sync, const std::string& msg) {
    std::string m = "E" + msg;
    (void)::send(sync, m.data(), std::min<size_t>(m.size(), 4000), MSG_NOSIGNAL);
    _exit(127);
}
[[noreturn]] void die_errno(int sync, const std::string& what) { die(sync, what + ": " + std::strerror(errno)); }

void close_fds_from(int first, int keep) {
    if (keep >= first) {
        if (keep > first) ::syscall(SYS_close_range, first, keep - 1, 0);
        ::syscall(SYS_close_range, keep + 1, ~0U, 0);
    } else {
        ::syscall(SYS_close_range, first, ~0U, 0);
    }
}

void reset_signals() {
    sigset_t all;
    sigemptyset(&all);
    sigprocmask(SIG_SETMASK, &all, nullptr);
    for (int s = 1; s < NSIG; ++s) signal(s, SIG_DFL);
}

int openat2_in_root(int root, const std::string& rel, int flags) {
    open_how how{};
    how.flags = static_cast<uint64_t>(flags | O_CLOEXEC);
    how.resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS;
    return static_cast<int>(::syscall(SYS_openat2, root, rel.c_str(), &how, sizeof how));
}

// Opens (O_PATH) `path` inside the container root, creating missing directories and, when
// `file`, an empty file as the last component. Symlinks resolve inside the root
// (RESOLVE_IN_ROOT), so an image cannot point a mount at the guest's own directories.
int ensure_target(int sync, int root, const std::string& path, bool file) {
    std::string prefix;
    size_t start = 1;
    while (start <= path.size()) {
        size_t end = path.find('/', start);
        if (end == std::string::npos) end = path.size();
        if (end == start) {
            start = end + 1;
            continue;
        }
        const bool last = end == path.size();
        const std::string comp = path.substr(start, end - start);
        const std::string parent = prefix.empty() ? "." : prefix;
        prefix += (prefix.empty() ? "" : "/") + comp;
        int fd = openat2_in_root(root, prefix, O_PATH);
        if (fd < 0 && errno == ENOENT) {
            int pfd = openat2_in_root(root, parent, O_PATH | O_DIRECTORY);
            if (pfd < 0) die_errno(sync, "open " + parent + " in the rootfs");
            if (last && file) {
                int f = ::openat(pfd, comp.c_str(), O_CREAT | O_WRONLY | O_CLOEXEC | O_NOFOLLOW, 0644);
                if (f < 0) die_errno(sync, "create " + path + " in the rootfs");
                ::close(f);
            } else if (::mkdirat(pfd, comp.c_str(), 0755) < 0 && errno != EEXIST) {
                die_errno(sync, "mkdir " + path + " in the rootfs");
            }
            ::close(pfd);
            fd = openat2_in_root(root, prefix, O_PATH);
        }
        if (fd < 0) die_errno(sync, "open " + path + " in the rootfs");
        if (last) return fd;
        ::close(fd);
        start = end + 1;
    }
    return openat2_in_root(root, ".", O_PATH | O_DIRECTORY);
}

std::string fd_path(int fd) { return "/proc/self/fd/" + std::to_string(fd); }

bool is_dir(const std::string& p) {
    struct stat st {};
    return ::stat(p.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

void do_mount(int sync, int root, const Mount& m) {
    const bool file_target = m.bind && !is_dir(m.source);
    int fd = ensure_target(sync, root, m.destination, file_target);
    const std::string target = fd_path(fd);
    if (m.bind) {
        if (::mount(m.source.c_str(), target.c_str(), nullptr, MS_BIND | (m.recursive ? MS_REC : 0), nullptr) < 0)
            die_errno(sync, "bind mount " + m.source + " on " + m.destination);
    } else {
        std::string type = m.type == "cgroup" ? "cgroup2" : m.type;  // the guest runs cgroup v2 only
        const std::string source = m.source.empty() ? type : m.source;
        if (::mount(source.c_str(), target.c_str(), type.c_str(), m.flags, m.data.empty() ? nullptr : m.data.c_str()) < 0)
            die_errno(sync, "mount " + m.type + " on " + m.destination);
    }
    ::close(fd);
    if (m.bind && (m.flags & ~MS_REC) != 0) {
        // A bind mount ignores flags; they take a remount of the new mount (reopened: the
        // old fd is the directory underneath).
        int nfd = ensure_target(sync, root, m.destination, file_target);
        if (::mount(nullptr, fd_path(nfd).c_str(), nullptr, MS_BIND | MS_REMOUNT | m.flags, nullptr) < 0)
            die_errno(sync, "remount " + m.destination);
        ::close(nfd);
    }
    if (m.propagation) {
        int nfd = ensure_target(sync, root, m.destination, file_target);
        if (::mount(nullptr, fd_path(nfd).c_str(), nullptr, m.propagation, nullptr) < 0)
            die_errno(sync, "set propagation of " + m.destination);
        ::close(nfd);
    }
}

// A /dev the spec made a tmpfs gets the devices every container expects (as runc does),
// bound from the guest's /dev, and the usual links.
void populate_dev(int sync, int root) {
    for (const char* d : {"null", "zero", "full", "random", "urandom", "tty"}) {
        const std::string dst = std::string("/dev/") + d;
        int fd = ensure_target(sync, root, dst, true);
        if (::mount(dst.c_str(), fd_path(fd).c_str(), nullptr, MS_BIND, nullptr) < 0)
            die_errno(sync, "bind " + dst + " into the container");
        ::close(fd);
    }
    int dev = openat2_in_root(root, "dev", O_PATH | O_DIRECTORY);
    if (dev < 0) die_errno(sync, "open /dev in the rootfs");
    const std::pair<const char*, const char*> links[] = {
        {"pts/ptmx", "ptmx"}, {"/proc/self/fd", "fd"}, {"/proc/self/fd/0", "stdin"},
        {"/proc/self/fd/1", "stdout"}, {"/proc/self/fd/2", "stderr"}};
    for (auto [to, name] : links)
        if (::symlinkat(to, dev, name) < 0 && errno != EEXIST) die_errno(sync, std::string("link /dev/") + name);
    ::close(dev);
}

void mask_and_protect(int sync, int root, const Spec& spec) {
    for (const auto& p : spec.masked_paths) {
        int fd = openat2_in_root(root, p.substr(1), O_PATH);
        if (fd < 0) continue;  // nothing to mask
        struct stat st {};
        ::fstat(fd, &st);
        const int rc = S_ISDIR(st.st_mode)
                           ? ::mount("tmpfs", fd_path(fd).c_str(), "tmpfs", MS_RDONLY, "size=0")
                           : ::mount("/dev/null", fd_path(fd).c_str(), nullptr, MS_BIND, nullptr);
        if (rc < 0) die_errno(sync, "mask " + p);
        ::close(fd);
    }
    for (const auto& p : spec.readonly_paths) {
        int fd = openat2_in_root(root, p.substr(1), O_PATH);
        if (fd < 0) continue;
        if (::mount(fd_path(fd).c_str(), fd_path(fd).c_str(), nullptr, MS_BIND | MS_REC, nullptr) < 0)
            die_errno(sync, "bind " + p + " read-only");
        ::close(fd);
        fd = openat2_in_root(root, p.substr(1), O_PATH);
        if (::mount(nullptr, fd_path(fd).c_str(), nullptr, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC,
                    nullptr) < 0)
            die_errno(sync, "remount " + p + " read-only");
        ::close(fd);
    }
}

std::string find_program(const Process& p) {
    const std::string& a0 = p.args[0];
    if (a0.find('/') != std::string::npos) return a0;
    std::string path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
    for (const auto& e : p.env)
        if (e.starts_with("PATH=")) path = e.substr(5);
    size_t start = 0;
    while (start <= path.size()) {
        size_t end = path.find(':', start);
        if (end == std::string::npos) end = path.size();
        std::string dir = path.substr(start, end - start);
        if (dir.empty()) dir = ".";
        std::string cand = dir + "/" + a0;
        if (::access(cand.c_str(), X_OK) == 0) return cand;
        start = end + 1;
    }
    return a0;
}

// The last steps of every container process: stdio, credentials, limits, then wait for
// `start` and exec. Runs as the process that execs.
[[noreturn]] void run_process(int sync, const Process& p, StdioFds& io, bool terminal) {
    if (::setsid() < 0) die_errno(sync, "setsid");
    if (terminal && ::ioctl(io.child_in.get(), TIOCSCTTY, 0) < 0) die_errno(sync, "make the pty the controlling terminal");
    if (::dup2(io.child_in.get(), 0) < 0 || ::dup2(io.child_out.get(), 1) < 0 || ::dup2(io.child_err.get(), 2) < 0)
        die_errno(sync, "set up stdio");
    close_fds_from(3, sync);
    reset_signals();
    for (const auto& r : p.rlimits) {
        rlimit l{r.soft, r.hard};
        if (::setrlimit(static_cast<__rlimit_resource>(r.resource), &l) < 0) die_errno(sync, "setrlimit");
    }
    ::umask(p.umask.value_or(022));
    if (::chdir(p.cwd.c_str()) < 0) die_errno(sync, "chdir " + p.cwd);
    if (::setgroups(p.additional_gids.size(), p.additional_gids.data()) < 0) die_errno(sync, "setgroups");
    if (::setresgid(p.gid, p.gid, p.gid) < 0) die_errno(sync, "setgid " + std::to_string(p.gid));
    if (::setresuid(p.uid, p.uid, p.uid) < 0) die_errno(sync, "setuid " + std::to_string(p.uid));
    if (p.no_new_privileges && ::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) die_errno(sync, "no_new_privs");

    std::vector<char*> argv, envp;
    for (const auto& a : p.args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    for (const auto& e : p.env) envp.push_back(const_cast<char*>(e.c_str()));
    envp.push_back(nullptr);

    if (::send(sync, "R", 1, MSG_NOSIGNAL) != 1) _exit(127);
    char c = 0;
    ssize_t n;
    do n = ::recv(sync, &c, 1, 0);
    while (n < 0 && errno == EINTR);
    if (n != 1 || c != 'S') _exit(127);  // the agent dropped us (delete before start)
    const std::string prog = find_program(p);
    ::execve(prog.c_str(), argv.data(), envp.data());
    die_errno(sync, "exec " + p.args[0]);
}

int decoded_status(int st) {
    if (WIFEXITED(st)) return WEXITSTATUS(st);
    if (WIFSIGNALED(st)) return 128 + WTERMSIG(st);
    return 255;
}

[[noreturn]] void run_stub(int sync, const std::string& rootfs, const Spec& spec, StdioFds& io, bool terminal,
                           int cgroup_procs) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
    if (cgroup_procs >= 0 && ::write(cgroup_procs, "0", 1) != 1) die_errno(sync, "join the container's cgroup");
    if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) < 0) die_errno(sync, "make mounts private");
    int root = ::open(rootfs.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (root < 0) die_errno(sync, "open " + rootfs);
    bool dev_tmpfs = false;
    for (const auto& m : spec.mounts) {
        do_mount(sync, root, m);
        if (m.destination == "/dev" && !m.bind) dev_tmpfs = true;
    }
    if (dev_tmpfs) populate_dev(sync, root);
    mask_and_protect(sync, root, spec);
    if (!spec.hostname.empty() && ::sethostname(spec.hostname.data(), spec.hostname.size()) < 0)
        die_errno(sync, "sethostname");
    // pivot_root(".", ".") stacks the old root on the new one; detaching it leaves only the
    // container's (pivot_root(2), NOTES).
    if (::fchdir(root) < 0) die_errno(sync, "chdir to the rootfs");
    if (::syscall(SYS_pivot_root, ".", ".") == 0) {
        if (::umount2(".", MNT_DETACH) < 0) die_errno(sync, "detach the old root");
    } else if (errno == EINVAL) {
        // The agent's root is an initramfs, which pivot_root cannot move (it has no parent
        // mount): move the rootfs over / and chroot, as runc --no-pivot does. The old root
        // stays under it in this mount namespace, out of the process's sight.
        if (::mount(".", "/", nullptr, MS_MOVE, nullptr) < 0) die_errno(sync, "move the rootfs to /");
        if (::chroot(".") < 0) die_errno(sync, "chroot");
    } else {
        die_errno(sync, "pivot_root");
    }
    if (::chdir("/") < 0) die_errno(sync, "chdir /");
    ::close(root);
    if (spec.root_readonly && ::mount(nullptr, "/", nullptr, MS_BIND | MS_REMOUNT | MS_RDONLY, nullptr) < 0)
        die_errno(sync, "remount the root read-only");

    const pid_t child = ::fork();
    if (child < 0) die_errno(sync, "fork the container process");
    if (child == 0) run_process(sync, spec.process, io, terminal);

    // PID 1 of the container: hold nothing, reap everything, leave with the process's status.
    close_fds_from(0, -1);
    reset_signals();
    for (;;) {
        int st = 0;
        const pid_t w = ::waitpid(-1, &st, 0);
        if (w == child) _exit(decoded_status(st));
        if (w < 0 && errno != EINTR) _exit(255);
    }
}

// ---- in the agent -----------------------------------------------------------------------

// Waits for one message from the child: 'R' (and its pid from SCM_CREDENTIALS), 'E'+text,
// or EOF. Returns the message ("" for EOF).
Result<std::string> wait_message(int sync, pid_t* cred_pid) {
    pollfd pfd{sync, POLLIN, 0};
    int rc;
    do rc = ::poll(&pfd, 1, kSyncTimeoutMs);
    while (rc < 0 && errno == EINTR);
    if (rc < 0) return sys_error("poll the container's sync socket");
    if (rc == 0) return error("the container process did not answer within 10 s");
    char buf[4096];
    alignas(cmsghdr) char cbuf[CMSG_SPACE(sizeof(ucred))];
    iovec iov{buf, sizeof buf};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf;
    msg.msg_controllen = sizeof cbuf;
    ssize_t n;
    do n = ::recvmsg(sync, &msg, MSG_CMSG_CLOEXEC);
    while (n < 0 && errno == EINTR);
    if (n < 0) {
        if (errno == ECONNRESET) return std::string{};
        return sys_error("read the container's sync socket");
    }
    if (cred_pid)
        for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c))
            if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_CREDENTIALS) {
                ucred u{};
                std::memcpy(&u, CMSG_DATA(c), sizeof u);
                *cred_pid = u.pid;
            }
    return std::string(buf, static_cast<size_t>(n));
}

Result<void> wait_ready(Spawned& s, bool want_pid) {
    pid_t pid = -1;
    auto m = wait_message(s.sync.get(), want_pid ? &pid : nullptr);
    if (!m) return std::unexpected(m.error());
    if (m->empty()) return error("the container process exited during setup");
    if ((*m)[0] == 'E') return error(m->substr(1));
    if (*m != "R") return error("the container process sent an unexpected message");
    if (want_pid) {
        if (pid <= 0) return error("the container process's pid did not arrive");
        s.pid = pid;
    }
    return {};
}

void kill_and_reap(pid_t pid) {
    ::kill(pid, SIGKILL);
    while (::waitpid(pid, nullptr, 0) < 0 && errno == EINTR) {
    }
}

Result<std::pair<UniqueFd, UniqueFd>> sync_pair() {
    int sv[2];
    if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0) return sys_error("socketpair");
    UniqueFd a(sv[0]), b(sv[1]);
    int one = 1;
    if (::setsockopt(a.get(), SOL_SOCKET, SO_PASSCRED, &one, sizeof one) < 0) return sys_error("SO_PASSCRED");
    return std::pair{std::move(a), std::move(b)};
}

Result<void> mkdir_p(const std::string& p, mode_t mode) {
    if (::mkdir(p.c_str(), mode) < 0 && errno != EEXIST) return sys_error("mkdir " + p);
    return {};
}

// A drive swapped in just before `create` reaches the guest's block layer through the
// virtio config-change interrupt (virtio 1.2 §4.1.4.3, capacity in §5.2.4), which Linux
// handles in a work item: until then the device still has the previous image's size, and
// ext4 refuses a superblock bigger than the device with EINVAL ("bad geometry").
Result<void> wait_for_size(const std::string& device, uint64_t size) {
    const std::string sys = "/sys/class/block/" + device.substr(device.rfind('/') + 1) + "/size";
    uint64_t sectors = 0;
    for (int i = 0; i < 1000; ++i) {  // 10 s in 10 ms steps
        if (FILE* f = std::fopen(sys.c_str(), "re")) {
            unsigned long long n = 0;
            if (std::fscanf(f, "%llu", &n) == 1) sectors = n;
            std::fclose(f);
        }
        if (sectors * 512 == size) {
            if (i > 0) log(device + ": its size reached " + std::to_string(size) + " bytes after " + std::to_string(i * 10) + " ms");
            return {};
        }
        ::usleep(10'000);
    }
    return error(device + " still has " + std::to_string(sectors * 512) + " bytes after 10 s, the image has " +
                 std::to_string(size) + ": the drive swap did not reach the guest");
}

}  // namespace

Result<RootfsMounts> mount_rootfs(const std::string& state_dir, const std::string& id, const Rootfs& r) {
    RootfsMounts m;
    m.dir = state_dir + "/" + id;
    m.rootfs = m.dir + "/rootfs";
    if (auto ok = mkdir_p(state_dir, 0700); !ok) return std::unexpected(ok.error());
    if (::mkdir(m.dir.c_str(), 0700) < 0) return sys_error("mkdir " + m.dir);
    auto fail = [&](std::string msg) -> Result<RootfsMounts> {
        unmount_rootfs(m);
        return error(std::move(msg));
    };
    if (::mkdir(m.rootfs.c_str(), 0755) < 0) return fail("mkdir " + m.rootfs + ": " + std::strerror(errno));
    if (!r.path.empty()) {
        if (::mount(r.path.c_str(), m.rootfs.c_str(), nullptr, MS_BIND | MS_REC, nullptr) < 0)
            return fail("bind mount rootfs " + r.path + ": " + std::strerror(errno));
        return m;
    }
    if (r.size != 0) {
        if (auto ok = wait_for_size(r.device, r.size); !ok) return fail(ok.error());
    }
    const unsigned long ro = r.fstype == "erofs" ? MS_RDONLY : 0;
    if (!r.writable_layer) {
        if (::mount(r.device.c_str(), m.rootfs.c_str(), r.fstype.c_str(), ro, nullptr) < 0)
            return fail("mount " + r.device + " (" + r.fstype + "): " + std::strerror(errno));
        return m;
    }
    const std::string lower = m.dir + "/lower", rw = m.dir + "/rw";
    if (::mkdir(lower.c_str(), 0755) < 0 || ::mkdir(rw.c_str(), 0755) < 0)
        return fail("mkdir in " + m.dir + ": " + std::strerror(errno));
    if (::mount(r.device.c_str(), lower.c_str(), r.fstype.c_str(), MS_RDONLY, nullptr) < 0)
        return fail("mount " + r.device + " (" + r.fstype + "): " + std::strerror(errno));
    m.lower = true;
    if (::mount("tmpfs", rw.c_str(), "tmpfs", 0, "mode=0755") < 0)
        return fail("mount the writable layer's tmpfs: " + std::string(std::strerror(errno)));
    m.rw = true;
    if (::mkdir((rw + "/upper").c_str(), 0755) < 0 || ::mkdir((rw + "/work").c_str(), 0755) < 0)
        return fail("mkdir in " + rw + ": " + std::strerror(errno));
    const std::string opts = "lowerdir=" + lower + ",upperdir=" + rw + "/upper,workdir=" + rw + "/work";
    if (::mount("overlay", m.rootfs.c_str(), "overlay", 0, opts.c_str()) < 0)
        return fail("mount the overlay: " + std::string(std::strerror(errno)));
    return m;
}

Result<void> write_copies(const RootfsMounts& m, std::vector<Mount>& mounts) {
    const std::string base = m.dir + "/copies";
    size_t n = 0;
    for (auto& mnt : mounts) {
        if (!mnt.copy) continue;
        if (n == 0 && ::mkdir(base.c_str(), 0700) < 0) return sys_error("mkdir " + base);
        const std::string top = base + "/" + std::to_string(n++);
        // One entry with path "" is a file; otherwise a directory. Each path was checked
        // (relative, no . or ..) and every directory here is new, so nothing is followed.
        const bool single = mnt.files.size() == 1 && mnt.files[0].path.empty();
        if (!single && ::mkdir(top.c_str(), 0755) < 0) return sys_error("mkdir " + top);
        for (const auto& f : mnt.files) {
            const std::string p = single ? top : top + "/" + f.path;
            for (size_t slash = top.size() + 1; !single && (slash = p.find('/', slash)) != std::string::npos; ++slash) {
                if (::mkdir(p.substr(0, slash).c_str(), 0755) < 0 && errno != EEXIST) return sys_error("mkdir " + p.substr(0, slash));
            }
            UniqueFd fd(::open(p.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
            if (!fd) return sys_error("create " + p);
            for (size_t off = 0; off < f.contents.size();) {
                const ssize_t w = ::write(fd.get(), f.contents.data() + off, f.contents.size() - off);
                if (w < 0 && errno == EINTR) continue;
                if (w <= 0) return sys_error("write " + p);
                off += static_cast<size_t>(w);
            }
            if (::fchmod(fd.get(), f.mode) < 0) return sys_error("chmod " + p);
        }
        mnt.source = top;
    }
    return {};
}

Result<void> wait_for_drives(const std::vector<Mount>& mounts) {
    for (const auto& mnt : mounts)
        if (mnt.drive_size != 0)
            if (auto ok = wait_for_size(mnt.source, mnt.drive_size); !ok) return ok;
    return {};
}

Result<void> prepare_pod_volumes(const std::string& state_dir, std::vector<Mount>& mounts) {
    for (auto& mnt : mounts) {
        if (mnt.pod_volume.empty()) continue;
        const std::string base = state_dir + "/+pod", dir = base + "/" + mnt.pod_volume;
        if (auto ok = mkdir_p(base, 0700); !ok) return ok;
        if (::mkdir(dir.c_str(), 0700) == 0) {
            if (::chmod(dir.c_str(), mnt.pod_volume_mode) < 0) return sys_error("chmod " + dir);  // not masked by the umask
        } else if (errno != EEXIST) {
            return sys_error("mkdir " + dir);
        }
        mnt.source = dir;
    }
    return {};
}

void unmount_rootfs(const RootfsMounts& m) {
    // The rootfs may carry submounts (a bind of a tree with mounts): detach takes them all.
    if (::umount2(m.rootfs.c_str(), MNT_DETACH) < 0 && errno != EINVAL && errno != ENOENT)
        log("unmount " + m.rootfs + ": " + std::strerror(errno));
    ::rmdir(m.rootfs.c_str());
    for (auto [mounted, name] : {std::pair{m.rw, "/rw"}, std::pair{m.lower, "/lower"}}) {
        const std::string p = m.dir + name;
        if (mounted && ::umount2(p.c_str(), MNT_DETACH) < 0) log("unmount " + p + ": " + std::strerror(errno));
        ::rmdir(p.c_str());
    }
    std::error_code ec;
    std::filesystem::remove_all(m.dir + "/copies", ec);  // write_copies' files; does not follow links
    if (ec) log("remove " + m.dir + "/copies: " + ec.message());
    if (::rmdir(m.dir.c_str()) < 0 && errno != ENOENT) log("remove " + m.dir + ": " + std::strerror(errno));
}

Result<StdioFds> make_stdio(const Stdio& s) {
    StdioFds io;
    auto null_fd = [&]() -> Result<UniqueFd> {
        UniqueFd fd(::open("/dev/null", O_RDWR | O_CLOEXEC));
        if (!fd) return sys_error("open /dev/null");
        return fd;
    };
    if (s.terminal) {
        UniqueFd master(::posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC | O_NONBLOCK));
        if (!master) return sys_error("open a pty");
        if (::grantpt(master.get()) < 0 || ::unlockpt(master.get()) < 0) return sys_error("unlock the pty");
        char name[64];
        if (::ptsname_r(master.get(), name, sizeof name) != 0) return sys_error("ptsname");
        UniqueFd slave(::open(name, O_RDWR | O_NOCTTY | O_CLOEXEC));
        if (!slave) return sys_error(std::string("open ") + name);
        io.child_in.reset(::fcntl(slave.get(), F_DUPFD_CLOEXEC, 3));
        io.child_out.reset(::fcntl(slave.get(), F_DUPFD_CLOEXEC, 3));
        io.child_err = std::move(slave);
        io.in_w.reset(::fcntl(master.get(), F_DUPFD_CLOEXEC, 3));
        io.out_r = std::move(master);
        if (!io.child_in || !io.child_out || !io.in_w) return sys_error("dup the pty");
        return io;
    }
    auto pipe_pair = [](UniqueFd& agent_end, UniqueFd& child_end, bool child_reads) -> Result<void> {
        int p[2];
        if (::pipe2(p, O_CLOEXEC) < 0) return sys_error("pipe");
        UniqueFd r(p[0]), w(p[1]);
        UniqueFd& mine = child_reads ? w : r;
        if (::fcntl(mine.get(), F_SETFL, O_NONBLOCK) < 0) return sys_error("O_NONBLOCK");
        agent_end = std::move(mine);
        child_end = child_reads ? std::move(r) : std::move(w);
        return {};
    };
    for (auto [want, agent_end, child_end, reads] :
         {std::tuple{s.in, &io.in_w, &io.child_in, true}, std::tuple{s.out, &io.out_r, &io.child_out, false},
          std::tuple{s.err, &io.err_r, &io.child_err, false}}) {
        if (want) {
            if (auto ok = pipe_pair(*agent_end, *child_end, reads); !ok) return std::unexpected(ok.error());
        } else {
            auto n = null_fd();
            if (!n) return std::unexpected(n.error());
            *child_end = std::move(*n);
        }
    }
    return io;
}

Result<Spawned> spawn_init(const std::string& rootfs, const Spec& spec, StdioFds& io, bool terminal,
                           int cgroup_procs) {
    auto pair = sync_pair();
    if (!pair) return std::unexpected(pair.error());
    Spawned s;
    s.sync = std::move(pair->first);
    const int child_sync = pair->second.get();
    // Like fork(), but the child starts in new namespaces. No CLONE_NEWNET: the VM's
    // network is the pod's. No CLONE_NEWUSER: refused in the decoder.
    const long pid = ::syscall(SYS_clone, CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWPID | SIGCHLD, nullptr,
                               nullptr, nullptr, 0);
    if (pid < 0) return sys_error("clone the container's namespaces");
    if (pid == 0) {
        s.sync.reset();
        run_stub(child_sync, rootfs, spec, io, terminal, cgroup_procs);
    }
    pair->second.reset();
    s.wait_pid = static_cast<pid_t>(pid);
    if (auto ok = wait_ready(s, true); !ok) {
        kill_and_reap(s.wait_pid);
        return std::unexpected(ok.error());
    }
    return s;
}

Result<Namespaces> open_namespaces(pid_t stub) {
    Namespaces ns;
    for (auto [name, fd] : {std::pair{"pid", &ns.pid}, std::pair{"mnt", &ns.mnt}, std::pair{"uts", &ns.uts},
                            std::pair{"ipc", &ns.ipc}}) {
        const std::string p = "/proc/" + std::to_string(stub) + "/ns/" + name;
        fd->reset(::open(p.c_str(), O_RDONLY | O_CLOEXEC));
        if (!*fd) return sys_error("open " + p);
    }
    return ns;
}

Result<Spawned> spawn_exec(const Namespaces& ns, int own_pidns, const Process& p, StdioFds& io, bool terminal,
                           int cgroup_procs) {
    auto pair = sync_pair();
    if (!pair) return std::unexpected(pair.error());
    Spawned s;
    s.sync = std::move(pair->first);
    const int child_sync = pair->second.get();
    // setns(CLONE_NEWPID) only changes where the agent's next child is born; the agent
    // itself stays where it is and switches back right after the fork.
    if (::setns(ns.pid.get(), CLONE_NEWPID) < 0) return sys_error("enter the container's pid namespace");
    const pid_t pid = ::fork();
    if (pid != 0 && ::setns(own_pidns, CLONE_NEWPID) < 0) {
        // Every later container would be born inside this one: not recoverable.
        log(std::string("cannot return to the agent's pid namespace: ") + std::strerror(errno));
        std::abort();
    }
    if (pid < 0) return sys_error("fork the exec process");
    if (pid == 0) {
        s.sync.reset();
        const int sync = child_sync;
        ::prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
        if (cgroup_procs >= 0 && ::write(cgroup_procs, "0", 1) != 1) die_errno(sync, "join the container's cgroup");
        if (::setns(ns.ipc.get(), CLONE_NEWIPC) < 0) die_errno(sync, "enter the ipc namespace");
        if (::setns(ns.uts.get(), CLONE_NEWUTS) < 0) die_errno(sync, "enter the uts namespace");
        if (::setns(ns.mnt.get(), CLONE_NEWNS) < 0) die_errno(sync, "enter the mount namespace");
        run_process(sync, p, io, terminal);
    }
    pair->second.reset();
    s.wait_pid = s.pid = pid;
    if (auto ok = wait_ready(s, false); !ok) {
        kill_and_reap(pid);
        return std::unexpected(ok.error());
    }
    return s;
}

Result<void> release(Spawned& s) {
    if (!s.sync) return error("already started");
    if (::send(s.sync.get(), "S", 1, MSG_NOSIGNAL) != 1) return sys_error("tell the process to start");
    auto m = wait_message(s.sync.get(), nullptr);
    s.sync.reset();
    if (!m) return std::unexpected(m.error());
    if (!m->empty() && (*m)[0] == 'E') return error(m->substr(1));
    return {};
}

}  // namespace kestrel::agent
