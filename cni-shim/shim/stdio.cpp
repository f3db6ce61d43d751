#include "cni-shim/shim/stdio.hpp"

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string_view>

#include "cni-shim/shim/pod_key.hpp"
#include "cni-shim/ttrpc/unix_socket.hpp"

namespace kestrel::shim {

namespace {
Result<void> check_fifo(const std::string& path, const char* which) {
    if (path.empty()) return {};
    if (path.front() != '/' || path.size() > 4095) return bad_request("{}: '{}' is not an absolute FIFO path", which, path.substr(0, 80));
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0) return std::unexpected(Error{fmt::format("{}: {}", which, path), errno, ErrorKind::BadRequest});
    if (!S_ISFIFO(st.st_mode)) return bad_request("{}: {} is not a FIFO", which, path);
    return {};
}

// Closes the output sinks of one process together. containerd's CRI plugin
// (pkg/cri/io/container_io.go, 1.6 and later) ends a whole `kubectl attach` when any one of
// the container's output FIFOs reaches EOF: the attach's stdin copy is closed, and that
// removes the attach's stdout and stderr writers. Bytes still queued in the other FIFO then
// go to the log but never to the attached client (seen in pod-cri: "attached:bye" missing).
// So the FIFOs are closed only once their readers have taken what they hold (FIONREAD on
// our end counts what is still queued; at most 5 s for a reader that stopped reading), and
// 20 ms after the last write, for the reader to hand the last read on before it sees EOF.
void release_sinks(std::vector<ProcessIo::Sink>& sinks) {
    using clock = std::chrono::steady_clock;
    if (sinks.size() > 1) {
        const auto deadline = clock::now() + std::chrono::seconds(5);
        for (;;) {
            bool queued = false;
            for (auto& s : sinks) {
                int n = 0;
                if (s.fifo && ::ioctl(s.fd.get(), FIONREAD, &n) == 0 && n > 0) queued = true;
            }
            if (!queued || clock::now() >= deadline) break;
            ::usleep(1000);
        }
        clock::time_point last{};
        for (auto& s : sinks)
            if (s.fifo) last = std::max(last, s.last_write);
        if (last != clock::time_point{}) std::this_thread::sleep_until(last + std::chrono::milliseconds(20));
    }
    sinks.clear();
}

bool write_all_fd(int fd, const char* p, std::size_t n) {
    while (n > 0) {
        ssize_t w = ::write(fd, p, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return false;
        p += w;
        n -= static_cast<std::size_t>(w);
    }
    return true;
}
}  // namespace

static std::optional<std::string> percent_decode(std::string_view s) {
    std::string out;
    for (std::size_t i = 0; i < s.size(); ++i) {
        if (s[i] != '%') {
            out.push_back(s[i]);
            continue;
        }
        if (i + 2 >= s.size() || !std::isxdigit(static_cast<unsigned char>(s[i + 1])) ||
            !std::isxdigit(static_cast<unsigned char>(s[i + 2])))
            return std::nullopt;
        out.push_back(static_cast<char>(std::stoi(std::string(s.substr(i + 1, 2)), nullptr, 16)));
        i += 2;
    }
    return out;
}

Result<OutputUri> parse_output_uri(const std::string& uri, const char* which) {
    OutputUri out;
    const auto sep = uri.find("://");
    if (sep == std::string::npos) {
        out.path = uri;  // a plain FIFO path
    } else {
        const std::string scheme = uri.substr(0, sep);
        if (scheme == "fifo") out.kind = OutputUri::Kind::Fifo;
        else if (scheme == "file") out.kind = OutputUri::Kind::File;
        else if (scheme == "binary") out.kind = OutputUri::Kind::Binary;
        else return bad_request("{}: '{}': unsupported scheme (FIFO paths, fifo://, file:// and binary:// are)", which, uri.substr(0, 80));
        std::string rest = uri.substr(sep + 3);
        std::string query;
        if (auto q = rest.find('?'); q != std::string::npos) {
            query = rest.substr(q + 1);
            rest.resize(q);
        }
        if (auto h = rest.find('#'); h != std::string::npos) rest.resize(h);
        if (!rest.empty() && rest.front() != '/') return bad_request("{}: '{}': a host in the URI is not supported (use {}:///path)", which, uri.substr(0, 80), scheme);
        auto path = percent_decode(rest);
        if (!path) return bad_request("{}: '{}': bad percent-encoding", which, uri.substr(0, 80));
        out.path = std::move(*path);
        if (!query.empty()) {
            if (out.kind != OutputUri::Kind::Binary) return bad_request("{}: '{}': only binary:// takes arguments", which, uri.substr(0, 80));
            for (std::size_t start = 0; start <= query.size();) {
                std::size_t end = query.find('&', start);
                if (end == std::string::npos) end = query.size();
                std::string_view kv(query.data() + start, end - start);
                if (!kv.empty()) {
                    const auto eq = kv.find('=');
                    auto k = percent_decode(kv.substr(0, eq));
                    auto v = eq == std::string_view::npos ? std::optional<std::string>("") : percent_decode(kv.substr(eq + 1));
                    if (!k || !v || k->empty() || k->find('\0') != std::string::npos || v->find('\0') != std::string::npos)
                        return bad_request("{}: '{}': bad argument", which, uri.substr(0, 80));
                    out.args.push_back(std::move(*k));
                    if (eq != std::string_view::npos) out.args.push_back(std::move(*v));
                }
                start = end + 1;
            }
            if (out.args.size() > 64) return bad_request("{}: more than 64 logging program arguments", which);
        }
    }
    if (!clean_absolute_path(out.path))
        return bad_request("{}: '{}' is not an absolute path without '..'", which, uri.substr(0, 80));
    return out;
}

Result<void> check_stdio_paths(const StdioPaths& p) {
    TRY(check_fifo(p.in, "stdin"));
    for (auto [path, which] : {std::pair{&p.out, "stdout"}, std::pair{&p.err, "stderr"}}) {
        if (path->empty()) continue;
        auto uri = TRY(parse_output_uri(*path, which));
        if (uri.kind == OutputUri::Kind::Fifo) TRY(check_fifo(uri.path, which));
    }
    if (p.terminal && !p.err.empty()) return bad_request("stderr: a terminal process has no separate stderr");
    return {};
}

Result<UniqueFd> open_fifo_writer(const std::string& path, std::chrono::milliseconds timeout) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
        UniqueFd fd(::open(path.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC));
        if (fd) {
            int fl = ::fcntl(fd.get(), F_GETFL);
            if (fl < 0 || ::fcntl(fd.get(), F_SETFL, fl & ~O_NONBLOCK) < 0) return fail_errno("fcntl {}", path);
            return fd;
        }
        if (errno != ENXIO) return fail_errno("open {}", path);
        if (std::chrono::steady_clock::now() >= deadline) return fail("{}: no reader on the FIFO", path);
        ::usleep(10'000);
    }
}

Result<UniqueFd> open_fifo_reader(const std::string& path) {
    UniqueFd fd(::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC));
    if (!fd) return fail_errno("open {}", path);
    return fd;
}

ProcessIo::~ProcessIo() {
    close_stdin();
    wait_output();
    std::lock_guard lk(mu_);
    if (stdin_.joinable()) stdin_.join();
    if (logger_ > 0) {
        // Its pipes are closed (the output copies ended), so it normally ends by itself once
        // it has written everything: 2 s for that, then SIGTERM and 12 s as containerd's
        // shims give it, then SIGKILL.
        int st = 0;
        auto wait_ms = [&](int ms) {
            for (int i = 0; i < ms / 10; ++i) {
                if (::waitpid(logger_, &st, WNOHANG) != 0) return true;
                ::usleep(10'000);
            }
            return ::waitpid(logger_, &st, WNOHANG) != 0;
        };
        if (!wait_ms(2000)) {
            ::kill(logger_, SIGTERM);
            if (!wait_ms(12000)) {
                ::kill(logger_, SIGKILL);
                while (::waitpid(logger_, &st, 0) < 0 && errno == EINTR) {}
            }
        }
    }
}

Result<std::pair<UniqueFd, UniqueFd>> ProcessIo::start_logger(const OutputUri& uri, const std::string& container,
                                                              const std::string& ns) {
    std::lock_guard lk(mu_);
    if (logger_ > 0) return fail("a logging program was already started for this process");
    // fd 5's pipe says "ready"; the exec pipe is closed by a successful execve (O_CLOEXEC)
    // and carries a failed one's errno.
    UniqueFd out_r, out_w, err_r, err_w, ready_r, ready_w, exec_r, exec_w;
    if (!make_pipe(out_r, out_w) || !make_pipe(err_r, err_w) || !make_pipe(ready_r, ready_w) || !make_pipe(exec_r, exec_w))
        return fail_errno("pipe");
    // Above 5, so the child's dup2 onto 3, 4 and 5 cannot overwrite one before it is used.
    UniqueFd hi_out(::fcntl(out_r.get(), F_DUPFD_CLOEXEC, 10)), hi_err(::fcntl(err_r.get(), F_DUPFD_CLOEXEC, 10)),
        hi_ready(::fcntl(ready_w.get(), F_DUPFD_CLOEXEC, 10));
    UniqueFd null(::open("/dev/null", O_RDWR | O_CLOEXEC));
    if (!hi_out || !hi_err || !hi_ready || !null) return fail_errno("dup the logging program's fds");
    // Everything the child needs is made before fork: the shim has threads.
    std::vector<std::string> strs{uri.path};
    strs.insert(strs.end(), uri.args.begin(), uri.args.end());
    std::vector<char*> argv;
    for (auto& a : strs) argv.push_back(a.data());
    argv.push_back(nullptr);
    std::string env_id = "CONTAINER_ID=" + container, env_ns = "CONTAINER_NAMESPACE=" + ns;
    std::array<char*, 3> envp{env_id.data(), env_ns.data(), nullptr};
    pid_t pid = ::fork();
    if (pid < 0) return fail_errno("fork");
    if (pid == 0) {
        sigset_t none;
        sigemptyset(&none);
        ::sigprocmask(SIG_SETMASK, &none, nullptr);
        ::dup2(null.get(), 0);
        ::dup2(null.get(), 1);
        ::dup2(null.get(), 2);
        ::dup2(hi_out.get(), 3);
        ::dup2(hi_err.get(), 4);
        ::dup2(hi_ready.get(), 5);
        ::setsid();  // containerd's signals to the shim's process group are not for it
        ::execve(argv[0], argv.data(), envp.data());
        const int e = errno;
        (void)!::write(exec_w.get(), &e, sizeof e);
        ::_exit(127);
    }
    ready_w.reset();
    hi_ready.reset();
    exec_w.reset();
    int exec_errno = 0;
    ssize_t n;
    while ((n = ::read(exec_r.get(), &exec_errno, sizeof exec_errno)) < 0 && errno == EINTR) {}
    if (n > 0) {
        int st = 0;
        while (::waitpid(pid, &st, 0) < 0 && errno == EINTR) {}
        return fail("cannot run logging program {}: {}", uri.path, std::strerror(exec_errno));
    }
    logger_ = pid;
    // Ready when it writes a byte or closes fd 5 (EOF); exec failing closes it too.
    pollfd p{ready_r.get(), POLLIN, 0};
    int r = 0;
    while ((r = ::poll(&p, 1, 10'000)) < 0 && errno == EINTR) {}
    if (r == 0) return fail("logging program {} did not get ready within 10 s (it must close or write to fd 5)", uri.path);
    int st = 0;
    if (::waitpid(pid, &st, WNOHANG) == pid) {
        logger_ = -1;
        return fail("logging program {} ended before the process started ({})", uri.path,
                    WIFEXITED(st) ? fmt::format("exit code {}{}", WEXITSTATUS(st), WEXITSTATUS(st) == 127 ? ", not executable?" : "")
                                  : fmt::format("signal {}", WTERMSIG(st)));
    }
    return std::pair{std::move(out_w), std::move(err_w)};
}

void ProcessIo::output_ended(Sink s) {
    std::vector<Sink> all;
    {
        std::lock_guard lk(mu_);
        ended_.push_back(std::move(s));
        if (--copying_ > 0) return;  // held open until the others end
        all.swap(ended_);
    }
    release_sinks(all);
}

void ProcessIo::add_output(UniqueFd from, UniqueFd to) {
    std::lock_guard lk(mu_);
    struct stat st {};
    const bool fifo = ::fstat(to.get(), &st) == 0 && S_ISFIFO(st.st_mode);
    ++copying_;
    outputs_.emplace_back([this, src = std::move(from), dst = std::move(to), fifo]() mutable {
        // A FIFO write has no MSG_NOSIGNAL: a gone reader must give EPIPE, not end the shim.
        // SIGPIPE is sent to the writing thread, so blocking it here is enough.
        sigset_t pipe_set;
        sigemptyset(&pipe_set);
        sigaddset(&pipe_set, SIGPIPE);
        pthread_sigmask(SIG_BLOCK, &pipe_set, nullptr);
        char buf[65536];
        Sink sink{std::move(dst), fifo, {}};
        bool sink_ok = true;
        for (;;) {
            ssize_t n = ::read(src.get(), buf, sizeof buf);
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) break;
            if (!sink_ok) continue;
            sink_ok = write_all_fd(sink.fd.get(), buf, static_cast<std::size_t>(n));
            sink.last_write = std::chrono::steady_clock::now();
        }
        if (!sink_ok) sink.fifo = false;  // its reader is gone: nothing to wait for
        output_ended(std::move(sink));
    });
}

Result<void> ProcessIo::add_stdin(UniqueFd from, UniqueFd to) {
    std::lock_guard lk(mu_);
    if (stdin_.joinable()) return fail("stdin already attached");
    stdin_stop_ = UniqueFd(::eventfd(0, EFD_CLOEXEC));
    if (!stdin_stop_) return fail_errno("eventfd");
    stdin_ = std::thread([src = std::move(from), dst = std::move(to), stop = stdin_stop_.get()]() mutable {
        // The FIFO was opened O_NONBLOCK before any writer came: read only what poll reports.
        // Linux reports POLLHUP on a FIFO only after a writer has come and gone, so an
        // unopened stdin waits here until close_stdin().
        char buf[65536];
        for (;;) {
            pollfd p[2] = {{src.get(), POLLIN, 0}, {stop, POLLIN, 0}};
            int r = ::poll(p, 2, -1);
            if (r < 0 && errno == EINTR) continue;
            if (r < 0 || (p[1].revents & POLLIN)) break;
            ssize_t n = ::read(src.get(), buf, sizeof buf);
            if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
            if (n <= 0) break;
            if (!ttrpc::write_all(dst.get(), std::string_view(buf, static_cast<std::size_t>(n)))) break;
        }
        dst.reset();  // EOF for the process (PROTOCOL.md "Stdio connections")
    });
    return {};
}

void ProcessIo::wait_output() {
    std::vector<std::thread> ts;
    {
        std::lock_guard lk(mu_);
        ts.swap(outputs_);
    }
    for (auto& t : ts) t.join();
}

void ProcessIo::close_stdin() {
    std::lock_guard lk(mu_);
    if (stdin_stop_) {
        std::uint64_t one = 1;
        (void)!::write(stdin_stop_.get(), &one, sizeof one);
    }
}

}  // namespace kestrel::shim
