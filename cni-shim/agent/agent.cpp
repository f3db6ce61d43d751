// The agent's event loop and its handling of each request (PROTOCOL.md). Requests run to
// completion in order; none waits for a process to exit. The only bounded waits are for a
// child's setup/exec answer on its sync socket (spawn.cpp).
#include "cni-shim/agent/agent.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <linux/vm_sockets.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/reboot.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <map>
#include <sstream>
#include <unordered_map>
#include <vector>

#include <nlohmann/json.hpp>

#include "cni-shim/agent/netconf.hpp"
#include "cni-shim/agent/request.hpp"
#include "cni-shim/agent/spawn.hpp"

namespace kestrel::agent {

using json = nlohmann::json;

void log(std::string_view line) {
    std::string l = "kestrel-agent: ";
    l += line;
    l += '\n';
    (void)::write(2, l.data(), l.size());
}

namespace {

// A host that sends requests but never reads the answers cannot make the agent buffer
// without end: past this its connection is closed.
constexpr size_t kMaxOutput = 16u << 20;
// Stdio is copied in chunks; a stream pauses its source while this much waits for the peer.
constexpr size_t kStreamHighWater = 1u << 20;
constexpr size_t kMaxConnections = 1024;

enum class Status { Created, Running, Stopped };

uint64_t now_ns() {
    timespec ts{};
    ::clock_gettime(CLOCK_REALTIME, &ts);
    return static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + static_cast<uint64_t>(ts.tv_nsec);
}

std::string dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

struct Container;

// One output stream of a process (stdout or stderr).
struct OutStream {
    UniqueFd fd;
    bool requested = false;
    uint64_t conn = 0;     // attached connection, 0 = none
    bool ever_attached = false;
    bool registered = false;
    bool paused = false;
    bool eof = false;
    bool done = false;     // eof and every byte handed to the peer (or the peer gone)
    uint64_t token = 0;
};

struct Proc {
    Container* container = nullptr;
    std::string exec;
    Spawned sp;
    Status status = Status::Created;
    int exit_status = 0;
    uint64_t exited_at_ns = 0;
    bool terminal = false;
    UniqueFd pty;  // for TIOCSWINSZ
    // stdin
    bool in_requested = false;
    UniqueFd in_w;
    uint64_t in_conn = 0;
    std::string in_buf;
    bool in_close_pending = false;
    bool in_registered = false;
    uint64_t in_token = 0;
    OutStream out, err;
    bool event_sent = false;
};

struct Container {
    std::string id;
    RootfsMounts rootfs;
    bool mounted = false;
    std::string cgroup;  // empty without cgroup v2
    UniqueFd cgroup_procs;
    Namespaces ns;
    ino_t pidns_ino = 0;
    dev_t pidns_dev = 0;
    std::map<std::string, std::unique_ptr<Proc>> procs;
    bool deleted = false;
};

enum class ConnKind { Unknown, Control, Stdio };

struct Conn {
    uint64_t id = 0;
    UniqueFd fd;
    ConnKind kind = ConnKind::Unknown;
    std::string in;
    std::string out;
    size_t out_off = 0;
    bool close_after_flush = false;
    bool read_shut = false;
    bool read_paused = false;
    Proc* proc = nullptr;
    Stream stream = Stream::Stdout;
    uint64_t token = 0;
    uint32_t events = 0;
};

enum class TargetKind { Listener, Signal, Conn, ProcOut, ProcErr, ProcIn };
struct Target {
    TargetKind kind;
    uint64_t conn = 0;
    Proc* proc = nullptr;
};

Result<UniqueFd> listen_on(const std::string& spec) {
    if (spec.starts_with("vsock:")) {
        unsigned long port = 0;
        try {
            port = std::stoul(spec.substr(6));
        } catch (...) {
            return error("--listen vsock:PORT: bad port");
        }
        if (port > UINT32_MAX) return error("--listen vsock:PORT: bad port");
        UniqueFd fd(::socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
        if (!fd) return sys_error("socket(AF_VSOCK)");
        sockaddr_vm a{};
        a.svm_family = AF_VSOCK;
        a.svm_cid = VMADDR_CID_ANY;
        a.svm_port = static_cast<unsigned>(port);
        if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) < 0) return sys_error("bind " + spec);
        if (::listen(fd.get(), 64) < 0) return sys_error("listen");
        return fd;
    }
    if (spec.starts_with("unix:")) {
        const std::string path = spec.substr(5);
        sockaddr_un a{};
        if (path.empty() || path.size() >= sizeof a.sun_path) return error("--listen unix:PATH: bad path");
        a.sun_family = AF_UNIX;
        std::memcpy(a.sun_path, path.c_str(), path.size());
        UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
        if (!fd) return sys_error("socket(AF_UNIX)");
        ::unlink(path.c_str());
        if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) < 0) return sys_error("bind " + path);
        if (::listen(fd.get(), 64) < 0) return sys_error("listen");
        return fd;
    }
    return error("--listen: expected vsock:PORT or unix:PATH");
}

bool write_file(const std::string& path, const std::string& value) {
    UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CLOEXEC));
    if (!fd) return false;
    return ::write(fd.get(), value.data(), value.size()) == static_cast<ssize_t>(value.size());
}

std::optional<std::string> read_file(const std::string& path) {
    std::ifstream f(path);
    if (!f) return std::nullopt;
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
}

}  // namespace

struct Agent::Impl {
    Options opt;
    UniqueFd epoll, listener, sigfd, own_pidns;
    bool cgroups = false;
    bool stop = false;
    uint64_t next_token = 1;
    uint64_t next_conn = 1;
    std::unordered_map<uint64_t, Target> targets;
    std::map<uint64_t, std::unique_ptr<Conn>> conns;
    std::map<std::string, std::unique_ptr<Container>> containers;
    std::vector<std::unique_ptr<Container>> graveyard;  // deleted, waiting for their processes
    std::unordered_map<pid_t, Proc*> by_pid;

    // ---- epoll ------------------------------------------------------------------------
    uint64_t watch(int fd, uint32_t events, Target t) {
        const uint64_t token = next_token++;
        epoll_event ev{};
        ev.events = events;
        ev.data.u64 = token;
        if (::epoll_ctl(epoll.get(), EPOLL_CTL_ADD, fd, &ev) < 0) log(std::string("epoll add: ") + std::strerror(errno));
        targets[token] = t;
        return token;
    }
    void rewatch(int fd, uint64_t token, uint32_t events) {
        epoll_event ev{};
        ev.events = events;
        ev.data.u64 = token;
        if (::epoll_ctl(epoll.get(), EPOLL_CTL_MOD, fd, &ev) < 0) log(std::string("epoll mod: ") + std::strerror(errno));
    }
    void unwatch(int fd, uint64_t token) {
        ::epoll_ctl(epoll.get(), EPOLL_CTL_DEL, fd, nullptr);
        targets.erase(token);
    }

    // ---- connections ------------------------------------------------------------------
    Conn* conn(uint64_t id) {
        auto it = conns.find(id);
        return it == conns.end() ? nullptr : it->second.get();
    }

    void update_conn_events(Conn& c) {
        uint32_t ev = 0;
        if (!c.read_shut && !c.read_paused) ev |= EPOLLIN;
        if (c.out.size() > c.out_off) ev |= EPOLLOUT;
        if (ev != c.events) {
            c.events = ev;
            rewatch(c.fd.get(), c.token, ev);
        }
    }

    void send_raw(Conn& c, std::string_view bytes) {
        if (c.out_off > 0 && c.out_off == c.out.size()) {
            c.out.clear();
            c.out_off = 0;
        }
        c.out.append(bytes);
        if (c.out.size() - c.out_off > kMaxOutput + kStreamHighWater) {
            log("connection " + std::to_string(c.id) + ": peer does not read its answers; closing it");
            close_conn(c.id);
            return;
        }
        flush(c.id);
    }

    void send_frame(Conn& c, const json& j) {
        const std::string body = dump(j);
        const uint32_t n = static_cast<uint32_t>(body.size());
        const char hdr[4] = {static_cast<char>(n >> 24), static_cast<char>(n >> 16), static_cast<char>(n >> 8),
                             static_cast<char>(n)};
        std::string frame(hdr, 4);
        frame += body;
        send_raw(c, frame);
    }

    // Writes what it can; closes the connection on a write error or when it was asked to
    // close after flushing. Returns false when the connection is gone.
    bool flush(uint64_t id) {
        Conn* c = conn(id);
        if (!c) return false;
        while (c->out_off < c->out.size()) {
            const ssize_t n = ::send(c->fd.get(), c->out.data() + c->out_off, c->out.size() - c->out_off, MSG_NOSIGNAL);
            if (n < 0) {
                if (errno == EINTR) continue;
                if (errno == EAGAIN) break;
                close_conn(id);
                return false;
            }
            c->out_off += static_cast<size_t>(n);
        }
        if (c->out_off == c->out.size()) {
            c->out.clear();
            c->out_off = 0;
            if (c->close_after_flush) {
                close_conn(id);
                return false;
            }
        }
        update_conn_events(*c);
        if (c->kind == ConnKind::Stdio && c->proc) on_stream_conn_drained(*c);
        return conns.count(id) != 0;
    }

    void close_conn(uint64_t id) {
        auto it = conns.find(id);
        if (it == conns.end()) return;
        std::unique_ptr<Conn> c = std::move(it->second);
        conns.erase(it);
        unwatch(c->fd.get(), c->token);
        if (c->kind == ConnKind::Stdio && c->proc) detach(*c->proc, c->stream);
    }

    // ---- stdio ------------------------------------------------------------------------
    OutStream& stream_of(Proc& p, Stream s) { return s == Stream::Stderr ? p.err : p.out; }

    void detach(Proc& p, Stream s) {
        if (s == Stream::Stdin) {
            p.in_conn = 0;
            p.in_close_pending = true;  // the host closing its side is EOF for the process
            flush_stdin(p);
            return;
        }
        OutStream& o = stream_of(p, s);
        o.conn = 0;
        if (o.eof) {
            o.done = true;
            maybe_exit_event(p);
        } else {
            // Nobody to deliver to: keep draining so the process does not block on a full
            // pipe; what it writes is dropped.
            resume_out(p, s);
        }
    }

    void resume_out(Proc& p, Stream s) {
        OutStream& o = stream_of(p, s);
        if (!o.fd) return;
        const TargetKind k = s == Stream::Stderr ? TargetKind::ProcErr : TargetKind::ProcOut;
        if (!o.registered) {
            o.token = watch(o.fd.get(), EPOLLIN, Target{k, 0, &p});
            o.registered = true;
            o.paused = false;
        } else if (o.paused) {
            rewatch(o.fd.get(), o.token, EPOLLIN);
            o.paused = false;
        }
    }

    void close_out(OutStream& o) {
        if (o.registered) unwatch(o.fd.get(), o.token);
        o.registered = false;
        o.fd.reset();
    }

    void on_out_readable(Proc& p, Stream s) {
        OutStream& o = stream_of(p, s);
        char buf[65536];
        for (int i = 0; i < 16 && o.fd; ++i) {
            const ssize_t n = ::read(o.fd.get(), buf, sizeof buf);
            if (n < 0 && errno == EINTR) continue;
            if (n < 0 && errno == EAGAIN) return;
            if (n <= 0) {  // EOF, or EIO from a pty master whose slave side is all closed
                o.eof = true;
                close_out(o);
                Conn* c = conn(o.conn);
                if (!c) {
                    o.done = true;
                    maybe_exit_event(p);
                } else {
                    c->close_after_flush = true;
                    flush(c->id);  // closes once empty; close_conn -> detach marks done
                }
                return;
            }
            Conn* c = conn(o.conn);
            if (!c) continue;  // detached: drop
            send_raw(*c, std::string_view(buf, static_cast<size_t>(n)));
            c = conn(o.conn);
            if (c && c->out.size() - c->out_off > kStreamHighWater) {
                rewatch(o.fd.get(), o.token, 0);
                o.paused = true;
                return;
            }
        }
    }

    void on_stream_conn_drained(Conn& c) {
        if (c.stream == Stream::Stdin) return;
        OutStream& o = stream_of(*c.proc, c.stream);
        if (o.paused && c.out.size() - c.out_off <= kStreamHighWater / 2) resume_out(*c.proc, c.stream);
    }

    void flush_stdin(Proc& p) {
        while (!p.in_buf.empty() && p.in_w) {
            const ssize_t n = ::write(p.in_w.get(), p.in_buf.data(), p.in_buf.size());
            if (n < 0 && errno == EINTR) continue;
            if (n < 0 && errno == EAGAIN) {
                if (!p.in_registered) {
                    p.in_token = watch(p.in_w.get(), EPOLLOUT, Target{TargetKind::ProcIn, 0, &p});
                    p.in_registered = true;
                }
                return;
            }
            if (n < 0) {  // EPIPE: the process closed its stdin
                p.in_buf.clear();
                close_stdin_fd(p);
                break;
            }
            p.in_buf.erase(0, static_cast<size_t>(n));
        }
        if (p.in_registered && (p.in_buf.empty() || !p.in_w)) {
            unwatch(p.in_w.get(), p.in_token);
            p.in_registered = false;
        }
        if (p.in_buf.empty() && p.in_close_pending) close_stdin_fd(p);
        if (Conn* c = conn(p.in_conn); c && c->read_paused && p.in_buf.size() < kStreamHighWater / 2) {
            c->read_paused = false;
            update_conn_events(*c);
        }
    }

    void close_stdin_fd(Proc& p) {
        if (p.in_registered) unwatch(p.in_w.get(), p.in_token);
        p.in_registered = false;
        p.in_w.reset();
    }

    // ---- exit events ------------------------------------------------------------------
    void maybe_exit_event(Proc& p) {
        if (p.status != Status::Stopped || p.event_sent) return;
        if (p.out.requested && !p.out.done) return;
        if (p.err.requested && !p.err.done) return;
        p.event_sent = true;
        const json ev = {{"event", "exit"},
                         {"container", p.container->id},
                         {"exec", p.exec},
                         {"status", p.exit_status},
                         {"exited_at_ns", p.exited_at_ns}};
        std::vector<uint64_t> ids;
        for (auto& [id, c] : conns)
            if (c->kind == ConnKind::Control) ids.push_back(id);
        for (auto id : ids)
            if (Conn* c = conn(id)) send_frame(*c, ev);
        bury();
    }

    void reap() {
        for (;;) {
            int st = 0;
            const pid_t pid = ::waitpid(-1, &st, WNOHANG);
            if (pid <= 0) return;
            auto it = by_pid.find(pid);
            if (it == by_pid.end()) continue;  // an orphan (we are PID 1 or a subreaper)
            Proc& p = *it->second;
            by_pid.erase(it);
            p.status = Status::Stopped;
            // The init stub already exits with the decoded status of the user's process.
            p.exit_status = WIFEXITED(st) ? WEXITSTATUS(st) : WIFSIGNALED(st) ? 128 + WTERMSIG(st) : 255;
            p.exited_at_ns = now_ns();
            p.sp.sync.reset();
            maybe_exit_event(p);
        }
    }

    // ---- containers -------------------------------------------------------------------
    Result<Container*> find_container(const std::string& id) {
        auto it = containers.find(id);
        if (it == containers.end()) return error("container " + id + " does not exist");
        return it->second.get();
    }
    Result<Proc*> find_proc(const std::string& cid, const std::string& exec) {
        auto c = find_container(cid);
        if (!c) return std::unexpected(c.error());
        auto it = (*c)->procs.find(exec);
        if (it == (*c)->procs.end()) return error("container " + cid + " has no exec " + exec);
        return it->second.get();
    }

    std::vector<pid_t> pids_in(const Container& c) {
        std::vector<pid_t> out;
        DIR* d = ::opendir("/proc");
        if (!d) return out;
        while (dirent* e = ::readdir(d)) {
            char* end = nullptr;
            const long pid = std::strtol(e->d_name, &end, 10);
            if (*end != '\0' || pid <= 0) continue;
            struct stat st {};
            const std::string ns = std::string("/proc/") + e->d_name + "/ns/pid";
            if (::stat(ns.c_str(), &st) == 0 && st.st_ino == c.pidns_ino && st.st_dev == c.pidns_dev)
                out.push_back(static_cast<pid_t>(pid));
        }
        ::closedir(d);
        return out;
    }

    pid_t stub_of(const Container& c) {
        auto it = c.procs.find("");
        return it == c.procs.end() ? -1 : it->second->sp.wait_pid;
    }

    void kill_all(Container& c, int sig) {
        const pid_t stub = stub_of(c);
        for (pid_t pid : pids_in(c))
            if (pid != stub) ::kill(pid, sig);
        if (sig == SIGKILL && stub > 0) ::kill(stub, SIGKILL);  // takes the namespace with it
    }

    Result<void> setup_cgroup(Container& c, const Resources& r) {
        if (!cgroups) {
            if (r.memory_max || r.cpu_max || r.pids_max)
                return error("spec.linux.resources: no cgroup v2 under " + opt.cgroup_root + " to apply them");
            return {};
        }
        c.cgroup = opt.cgroup_root + "/" + c.id;
        if (::mkdir(c.cgroup.c_str(), 0755) < 0) {
            c.cgroup.clear();
            return sys_error("mkdir the container's cgroup");
        }
        auto set = [&](const char* file, const std::string& v) -> Result<void> {
            if (!write_file(c.cgroup + "/" + file, v + "\n"))
                return sys_error(std::string("write ") + v + " to " + file);
            return {};
        };
        if (r.memory_max)
            if (auto ok = set("memory.max", *r.memory_max < 0 ? "max" : std::to_string(*r.memory_max)); !ok) return ok;
        if (r.cpu_max)
            if (auto ok = set("cpu.max", *r.cpu_max); !ok) return ok;
        if (r.pids_max)
            if (auto ok = set("pids.max", *r.pids_max <= 0 ? "max" : std::to_string(*r.pids_max)); !ok) return ok;
        c.cgroup_procs.reset(::open((c.cgroup + "/cgroup.procs").c_str(), O_WRONLY | O_CLOEXEC));
        if (!c.cgroup_procs) return sys_error("open the container's cgroup.procs");
        return {};
    }

    void release_container(Container& c) {
        if (c.mounted) unmount_rootfs(c.rootfs);
        c.mounted = false;
    }

    // Removes what deleted containers left once their processes are all reaped.
    void bury() {
        for (auto it = graveyard.begin(); it != graveyard.end();) {
            Container& c = **it;
            bool all = true;
            for (auto& [e, p] : c.procs) all = all && p->status == Status::Stopped && p->event_sent;
            if (!all) {
                ++it;
                continue;
            }
            for (auto& [e, p] : c.procs) drop_proc(*p);
            c.cgroup_procs.reset();
            if (!c.cgroup.empty() && ::rmdir(c.cgroup.c_str()) < 0)
                log("remove cgroup " + c.cgroup + ": " + std::strerror(errno));
            it = graveyard.erase(it);
        }
    }

    // Closes a process's stdio and the connections attached to it; it is about to go.
    void drop_proc(Proc& p) {
        for (uint64_t id : {p.in_conn, p.out.conn, p.err.conn})
            if (Conn* c = conn(id)) {
                c->proc = nullptr;
                close_conn(id);
            }
        close_stdin_fd(p);
        close_out(p.out);
        close_out(p.err);
        if (p.sp.wait_pid > 0) by_pid.erase(p.sp.wait_pid);
    }

    json proc_state(const Proc& p) {
        const char* s = p.status == Status::Created ? "created" : p.status == Status::Running ? "running" : "stopped";
        return {{"status", s}, {"pid", p.sp.pid}, {"exit_status", p.exit_status}, {"exited_at_ns", p.exited_at_ns}};
    }

    std::unique_ptr<Proc> make_proc(Container& c, const std::string& exec, const Stdio& s, StdioFds& io) {
        auto p = std::make_unique<Proc>();
        p->container = &c;
        p->exec = exec;
        p->terminal = s.terminal;
        p->in_requested = s.in;
        p->in_w = std::move(io.in_w);
        if (!s.in) p->in_w.reset();
        p->out.requested = s.out || s.terminal;
        p->out.fd = std::move(io.out_r);
        p->err.requested = s.err && !s.terminal;
        p->err.fd = std::move(io.err_r);
        if (s.terminal) p->pty.reset(::fcntl(p->out.fd.get(), F_DUPFD_CLOEXEC, 3));
        return p;
    }

    // ---- operations -------------------------------------------------------------------
    Result<json> op_create(const Create& r) {
        if (containers.count(r.container)) return error("container " + r.container + " already exists");
        for (auto& g : graveyard)
            if (g->id == r.container) return error("container " + r.container + " is still being deleted");
        if (r.spec.network_namespace)
            log("container " + r.container + ": the spec's network namespace is ignored (the pod uses the VM's network)");
        auto c = std::make_unique<Container>();
        c->id = r.container;
        auto undo = [&](std::string msg) -> Result<json> {
            release_container(*c);
            c->cgroup_procs.reset();
            if (!c->cgroup.empty()) ::rmdir(c->cgroup.c_str());
            return error(std::move(msg));
        };
        auto m = mount_rootfs(opt.state_dir, r.container, r.rootfs);
        if (!m) return error(m.error());
        c->rootfs = *m;
        c->mounted = true;
        Spec spec = r.spec;
        if (auto ok = write_copies(c->rootfs, spec.mounts); !ok) return undo("create " + r.container + ": " + ok.error());
        if (auto ok = wait_for_drives(spec.mounts); !ok) return undo("create " + r.container + ": " + ok.error());
        if (auto ok = prepare_pod_volumes(opt.state_dir, spec.mounts); !ok) return undo("create " + r.container + ": " + ok.error());
        if (auto ok = setup_cgroup(*c, r.spec.resources); !ok) return undo(ok.error());
        auto io = make_stdio(r.stdio);
        if (!io) return undo(io.error());
        auto sp = spawn_init(c->rootfs.rootfs, spec, *io, r.stdio.terminal, c->cgroup_procs.get());
        if (!sp) return undo("create " + r.container + ": " + sp.error());
        auto ns = open_namespaces(sp->wait_pid);
        struct stat st {};
        if (!ns || ::fstat(ns->pid.get(), &st) < 0) {
            ::kill(sp->wait_pid, SIGKILL);
            ::waitpid(sp->wait_pid, nullptr, 0);
            return undo(ns ? std::string("fstat the pid namespace") : ns.error());
        }
        c->ns = std::move(*ns);
        c->pidns_ino = st.st_ino;
        c->pidns_dev = st.st_dev;
        auto p = make_proc(*c, "", r.stdio, *io);
        p->sp = std::move(*sp);
        const pid_t pid = p->sp.pid;
        by_pid[p->sp.wait_pid] = p.get();
        c->procs[""] = std::move(p);
        containers[r.container] = std::move(c);
        return json{{"pid", pid}};
    }

    Result<json> op_exec(const Exec& r) {
        auto cr = find_container(r.container);
        if (!cr) return std::unexpected(cr.error());
        Container& c = **cr;
        if (c.procs.count(r.exec)) return error("exec " + r.exec + " already exists in " + r.container);
        if (c.procs.at("")->status == Status::Stopped) return error("container " + r.container + " has stopped");
        auto io = make_stdio(r.stdio);
        if (!io) return error(io.error());
        auto sp = spawn_exec(c.ns, own_pidns.get(), r.process, *io, r.stdio.terminal, c.cgroup_procs.get());
        if (!sp) return error("exec " + r.exec + ": " + sp.error());
        auto p = make_proc(c, r.exec, r.stdio, *io);
        p->sp = std::move(*sp);
        by_pid[p->sp.wait_pid] = p.get();
        c.procs[r.exec] = std::move(p);
        return json::object();
    }

    Result<json> op_start(const Start& r) {
        auto p = find_proc(r.container, r.exec);
        if (!p) return std::unexpected(p.error());
        if ((*p)->status != Status::Created) return error("process already started");
        if (!r.exec.empty() && (*p)->container->procs.at("")->status == Status::Stopped)
            return error("container " + r.container + " has stopped");
        auto ok = release((*p)->sp);
        if (!ok) return error("start: " + ok.error());
        if ((*p)->status == Status::Created) (*p)->status = Status::Running;
        return json{{"pid", (*p)->sp.pid}};
    }

    Result<json> op_signal(const Signal& r) {
        auto p = find_proc(r.container, r.exec);
        if (!p) return std::unexpected(p.error());
        if (r.all) {
            kill_all(*(*p)->container, r.signal);
            return json::object();
        }
        if ((*p)->status == Status::Stopped) return error("process has exited");
        if (::kill((*p)->sp.pid, r.signal) < 0) return sys_error("kill");
        return json::object();
    }

    Result<json> op_resize(const Resize& r) {
        auto p = find_proc(r.container, r.exec);
        if (!p) return std::unexpected(p.error());
        if (!(*p)->pty) return error("process has no terminal");
        winsize ws{};
        ws.ws_col = r.width;
        ws.ws_row = r.height;
        if (::ioctl((*p)->pty.get(), TIOCSWINSZ, &ws) < 0) return sys_error("TIOCSWINSZ");
        return json::object();
    }

    Result<json> op_close_stdin(const CloseStdin& r) {
        auto p = find_proc(r.container, r.exec);
        if (!p) return std::unexpected(p.error());
        (*p)->in_close_pending = true;
        flush_stdin(**p);
        return json::object();
    }

    Result<json> op_stats(const Stats& r) {
        auto cr = find_container(r.container);
        if (!cr) return std::unexpected(cr.error());
        Container& c = **cr;
        json out = json::object();
        if (c.cgroup.empty()) return out;
        auto number = [](const std::optional<std::string>& s) -> std::optional<uint64_t> {
            if (!s) return std::nullopt;
            char* end = nullptr;
            const unsigned long long v = std::strtoull(s->c_str(), &end, 10);
            if (end == s->c_str()) return std::nullopt;
            return v;
        };
        // cpu.stat and memory.stat are "name value" lines (kernel cgroup-v2.rst); each goes
        // through whole, at most 64 names: the shim picks the ones it knows.
        auto keyed = [&](const char* file) {
            json m = json::object();
            if (auto text = read_file(c.cgroup + "/" + file)) {
                std::istringstream in(*text);
                std::string k;
                uint64_t v;
                while (m.size() < 64 && in >> k >> v) m[k] = v;
            }
            return m;
        };
        json cpu = keyed("cpu.stat");
        if (cpu.contains("usage_usec")) out["cpu_usage_usec"] = cpu["usage_usec"];
        if (!cpu.empty()) out["cpu_stat"] = std::move(cpu);
        if (json mem = keyed("memory.stat"); !mem.empty()) out["memory_stat"] = std::move(mem);
        if (auto v = number(read_file(c.cgroup + "/memory.current"))) out["memory_current"] = *v;
        if (auto v = number(read_file(c.cgroup + "/memory.max"))) out["memory_max"] = *v;
        if (auto v = number(read_file(c.cgroup + "/pids.current"))) out["pids_current"] = *v;
        return out;
    }

    Result<json> op_delete(const Delete& r) {
        auto cr = find_container(r.container);
        if (!cr) return std::unexpected(cr.error());
        Container& c = **cr;
        if (r.exec) {
            auto it = c.procs.find(*r.exec);
            if (it == c.procs.end()) return error("container " + r.container + " has no exec " + *r.exec);
            if (it->second->status != Status::Stopped) return error("exec " + *r.exec + " is still running");
            drop_proc(*it->second);
            c.procs.erase(it);
            return json::object();
        }
        delete_container(r.container);
        return json::object();
    }

    void delete_container(const std::string& id) {
        auto it = containers.find(id);
        std::unique_ptr<Container> c = std::move(it->second);
        containers.erase(it);
        kill_all(*c, SIGKILL);
        for (auto& [e, p] : c->procs) {
            if (p->status != Status::Stopped) ::kill(p->sp.wait_pid, SIGKILL);
            p->sp.sync.reset();  // a process waiting for `start` gives up
            // Nobody can attach any more: drain what was never attached so its EOF (and
            // with it the exit event and the cgroup's removal) can come.
            for (auto s : {Stream::Stdout, Stream::Stderr})
                if (stream_of(*p, s).conn == 0) resume_out(*p, s);
        }
        // The container's own mount namespace holds its copies; the agent's are detached now.
        release_container(*c);
        c->deleted = true;
        graveyard.push_back(std::move(c));
        bury();
    }

    Result<json> dispatch(const Body& b) {
        return std::visit(
            [&](const auto& r) -> Result<json> {
                using T = std::decay_t<decltype(r)>;
                if constexpr (std::is_same_v<T, Ping>) return json{{"version", kProtocolVersion}};
                else if constexpr (std::is_same_v<T, Create>) return op_create(r);
                else if constexpr (std::is_same_v<T, Exec>) return op_exec(r);
                else if constexpr (std::is_same_v<T, Start>) return op_start(r);
                else if constexpr (std::is_same_v<T, Signal>) return op_signal(r);
                else if constexpr (std::is_same_v<T, State>) {
                    auto p = find_proc(r.container, r.exec);
                    if (!p) return std::unexpected(p.error());
                    return proc_state(**p);
                } else if constexpr (std::is_same_v<T, Resize>) return op_resize(r);
                else if constexpr (std::is_same_v<T, CloseStdin>) return op_close_stdin(r);
                else if constexpr (std::is_same_v<T, Pids>) {
                    auto c = find_container(r.container);
                    if (!c) return std::unexpected(c.error());
                    json list = json::array();
                    const pid_t stub = stub_of(**c);
                    for (pid_t pid : pids_in(**c))
                        if (pid != stub) list.push_back(pid);
                    return json{{"pids", list}};
                } else if constexpr (std::is_same_v<T, Stats>) return op_stats(r);
                else if constexpr (std::is_same_v<T, Delete>) return op_delete(r);
                else if constexpr (std::is_same_v<T, Network>) {
                    if (auto applied = apply_network(r); !applied) return std::unexpected(applied.error());
                    return json::object();
                } else if constexpr (std::is_same_v<T, Shutdown>) {
                    stop = true;
                    return json::object();
                } else return error("attach must be the first frame of its own connection");
            },
            b);
    }

    Result<void> attach(Conn& c, const Attach& a) {
        auto pr = find_proc(a.container, a.exec);
        if (!pr) return std::unexpected(pr.error());
        Proc& p = **pr;
        if (a.stream == Stream::Stdin) {
            if (!p.in_requested) return error("stdin was not requested for this process");
            if (p.in_conn) return error("stdin is already attached");
            if (!p.in_w || p.in_close_pending) return error("stdin is already closed");
            p.in_conn = c.id;
        } else {
            if (a.stream == Stream::Stderr && p.terminal)
                return error("a terminal process has no separate stderr (it is on stdout)");
            OutStream& o = stream_of(p, a.stream);
            if (!o.requested) return error("this stream was not requested for this process");
            if (o.conn) return error("this stream is already attached");
            if (o.eof) return error("this stream has already ended");
            o.conn = c.id;
            o.ever_attached = true;
        }
        c.kind = ConnKind::Stdio;
        c.proc = &p;
        c.stream = a.stream;
        return {};
    }

    void on_frame(Conn& c, std::string_view payload) {
        auto req = decode_request(payload);
        const bool first = c.kind == ConnKind::Unknown;
        if (first && req && std::holds_alternative<Attach>(req->body)) {
            const uint64_t id = c.id;
            if (auto ok = attach(c, std::get<Attach>(req->body)); !ok) {
                send_frame(c, json{{"ok", false}, {"error", ok.error()}});
                if (Conn* cc = conn(id)) {
                    cc->close_after_flush = true;
                    flush(id);
                }
                return;
            }
            send_frame(c, json{{"ok", true}});
            Conn* cc = conn(id);
            if (!cc) return;
            if (cc->stream != Stream::Stdin) resume_out(*cc->proc, cc->stream);
            return;
        }
        if (first) {
            // The first frame of a failed attach still names its kind.
            if (!req && payload.find("\"attach\"") != std::string_view::npos) {
                auto j = json::parse(payload, nullptr, false);
                if (j.is_object() && j.value("op", json()) == "attach") {
                    send_frame(c, json{{"ok", false}, {"error", req.error().message}});
                    if (Conn* cc = conn(c.id)) {
                        cc->close_after_flush = true;
                        flush(cc->id);
                    }
                    return;
                }
            }
            c.kind = ConnKind::Control;
        }
        if (!req) {
            json ans = {{"ok", false}, {"error", req.error().message}};
            if (req.error().id) ans["id"] = *req.error().id;
            send_frame(c, ans);
            return;
        }
        const uint64_t cid = c.id;
        auto r = dispatch(req->body);
        Conn* cc = conn(cid);
        if (!cc) return;
        json ans;
        if (r) {
            ans = std::move(*r);
            ans["id"] = req->id;
            ans["ok"] = true;
        } else {
            ans = {{"id", req->id}, {"ok", false}, {"error", r.error()}};
        }
        send_frame(*cc, ans);
    }

    void on_stdin_bytes(Conn& c, std::string_view bytes) {
        Proc* p = c.proc;
        if (!p || c.stream != Stream::Stdin) return;  // output streams: input is ignored
        if (!p->in_w || p->in_close_pending) return;
        p->in_buf.append(bytes);
        flush_stdin(*p);
        if (p->in_buf.size() > kStreamHighWater) {
            c.read_paused = true;
            update_conn_events(c);
        }
    }

    void on_conn_readable(uint64_t id) {
        char buf[65536];
        for (int i = 0; i < 16; ++i) {
            Conn* c = conn(id);
            if (!c || c->read_shut || c->read_paused) return;
            const ssize_t n = ::recv(c->fd.get(), buf, sizeof buf, 0);
            if (n < 0 && errno == EINTR) continue;
            if (n < 0 && errno == EAGAIN) return;
            if (n <= 0) {
                if (c->kind == ConnKind::Stdio && c->stream != Stream::Stdin && n == 0) {
                    // A half-close on an output stream: keep delivering.
                    c->read_shut = true;
                    update_conn_events(*c);
                    return;
                }
                close_conn(id);
                return;
            }
            if (c->kind == ConnKind::Stdio) {
                on_stdin_bytes(*c, std::string_view(buf, static_cast<size_t>(n)));
                continue;
            }
            c->in.append(buf, static_cast<size_t>(n));
            while (true) {
                c = conn(id);
                if (!c || c->kind == ConnKind::Stdio || c->close_after_flush) break;
                if (c->in.size() < 4) break;
                const auto* h = reinterpret_cast<const uint8_t*>(c->in.data());
                auto len = frame_length(std::span<const uint8_t, 4>(h, 4));
                if (!len) {
                    log("connection " + std::to_string(id) + " closed: " + len.error().message);
                    close_conn(id);
                    return;
                }
                if (c->in.size() < 4 + *len) break;
                std::string payload = c->in.substr(4, *len);
                c->in.erase(0, 4 + *len);
                on_frame(*c, payload);
            }
            c = conn(id);
            if (c && c->kind == ConnKind::Stdio && !c->in.empty()) {
                // Bytes sent right behind the attach frame belong to the stream.
                std::string rest = std::move(c->in);
                c->in.clear();
                on_stdin_bytes(*c, rest);
            }
            if (stop) return;
        }
    }

    void on_accept() {
        for (;;) {
            UniqueFd fd(::accept4(listener.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC));
            if (!fd) return;
            if (conns.size() >= kMaxConnections) {
                log("too many connections; refusing one");
                continue;
            }
            auto c = std::make_unique<Conn>();
            c->id = next_conn++;
            c->events = EPOLLIN;
            c->token = watch(fd.get(), EPOLLIN, Target{TargetKind::Conn, c->id, nullptr});
            c->fd = std::move(fd);
            conns[c->id] = std::move(c);
        }
    }

    int run() {
        epoll_event evs[64];
        while (!stop) {
            const int n = ::epoll_wait(epoll.get(), evs, 64, -1);
            if (n < 0) {
                if (errno == EINTR) continue;
                log(std::string("epoll_wait: ") + std::strerror(errno));
                return 1;
            }
            for (int i = 0; i < n && !stop; ++i) {
                auto it = targets.find(evs[i].data.u64);
                if (it == targets.end()) continue;  // removed by an earlier event of this batch
                const Target t = it->second;
                const uint32_t e = evs[i].events;
                switch (t.kind) {
                case TargetKind::Listener: on_accept(); break;
                case TargetKind::Signal: {
                    signalfd_siginfo si;
                    while (::read(sigfd.get(), &si, sizeof si) == sizeof si) {
                    }
                    reap();
                    break;
                }
                case TargetKind::Conn:
                    if (e & EPOLLOUT) flush(t.conn);
                    if (e & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
                        Conn* c = conn(t.conn);
                        if (c && c->read_shut && (e & (EPOLLHUP | EPOLLERR))) close_conn(t.conn);
                        else on_conn_readable(t.conn);
                    }
                    break;
                case TargetKind::ProcOut: on_out_readable(*t.proc, Stream::Stdout); break;
                case TargetKind::ProcErr: on_out_readable(*t.proc, Stream::Stderr); break;
                case TargetKind::ProcIn: flush_stdin(*t.proc); break;
                }
            }
        }
        shutdown();
        return 0;
    }

    void shutdown() {
        // The answer to `shutdown` first (bounded: a peer that does not read loses it).
        for (auto& [id, c] : conns) {
            int fl = ::fcntl(c->fd.get(), F_GETFL);
            ::fcntl(c->fd.get(), F_SETFL, fl & ~O_NONBLOCK);
            timeval tv{1, 0};
            ::setsockopt(c->fd.get(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
            if (c->out.size() > c->out_off)
                (void)::send(c->fd.get(), c->out.data() + c->out_off, c->out.size() - c->out_off, MSG_NOSIGNAL);
        }
        std::vector<std::string> ids;
        for (auto& [id, c] : containers) ids.push_back(id);
        for (auto& id : ids) delete_container(id);
        // Give the killed processes a moment so their cgroups can go too.
        for (int i = 0; i < 200 && !graveyard.empty(); ++i) {
            ::usleep(10000);
            reap();
        }
        if (opt.init) {
            ::sync();
            ::reboot(RB_POWER_OFF);
            log(std::string("reboot(RB_POWER_OFF): ") + std::strerror(errno));
        }
    }
};

Agent::Agent(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Agent::~Agent() = default;
int Agent::run() { return impl_->run(); }

Result<std::unique_ptr<Agent>> Agent::create(const Options& o) {
    auto impl = std::make_unique<Impl>();
    impl->opt = o;
    impl->epoll.reset(::epoll_create1(EPOLL_CLOEXEC));
    if (!impl->epoll) return sys_error("epoll_create1");
    auto l = listen_on(o.listen);
    if (!l) return std::unexpected(l.error());
    impl->listener = std::move(*l);
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGCHLD);
    if (::sigprocmask(SIG_BLOCK, &set, nullptr) < 0) return sys_error("block SIGCHLD");
    impl->sigfd.reset(::signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC));
    if (!impl->sigfd) return sys_error("signalfd");
    ::signal(SIGPIPE, SIG_IGN);
    impl->own_pidns.reset(::open("/proc/self/ns/pid", O_RDONLY | O_CLOEXEC));
    if (!impl->own_pidns) return sys_error("open /proc/self/ns/pid");
    if (!o.init && ::prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) < 0) return sys_error("PR_SET_CHILD_SUBREAPER");

    // cgroup v2 only: the container cgroups go under cgroup_root, whose parent must be a
    // cgroup2 mount (a v1 or hybrid host gets no limits and no stats, said once here).
    const std::string parent = o.cgroup_root.substr(0, o.cgroup_root.rfind('/'));
    struct statfs sf {};
    if (::statfs(parent.c_str(), &sf) == 0 && sf.f_type == CGROUP2_SUPER_MAGIC) {
        if (::mkdir(o.cgroup_root.c_str(), 0755) < 0 && errno != EEXIST) {
            log("cannot create " + o.cgroup_root + ": " + std::strerror(errno) + "; running without cgroups");
        } else {
            impl->cgroups = true;
            // Hand the controllers down so each container's memory/cpu/pids files exist.
            if (auto avail = read_file(parent + "/cgroup.controllers")) {
                std::istringstream in(*avail);
                std::string ctl;
                while (in >> ctl)
                    if (ctl == "memory" || ctl == "cpu" || ctl == "pids")
                        for (const auto& dir : {parent, o.cgroup_root})
                            if (!write_file(dir + "/cgroup.subtree_control", "+" + ctl))
                                log("enable " + ctl + " in " + dir + ": " + std::strerror(errno));
            }
        }
    } else {
        log(parent + " is not a cgroup v2 mount; containers get no cgroup (no limits, no stats)");
    }
    impl->watch(impl->listener.get(), EPOLLIN, Target{TargetKind::Listener});
    impl->watch(impl->sigfd.get(), EPOLLIN, Target{TargetKind::Signal});
    return std::unique_ptr<Agent>(new Agent(std::move(impl)));
}

}  // namespace kestrel::agent
