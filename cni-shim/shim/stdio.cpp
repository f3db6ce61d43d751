#include "cni-shim/shim/stdio.hpp"

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdint>

#include "cni-shim/ttrpc/unix_socket.hpp"

namespace kestrel::shim {

namespace {
Result<void> check_fifo(const std::string& path, const char* which) {
    if (path.empty()) return {};
    if (path.front() != '/' || path.size() > 4095) return bad_request("{}: '{}' is not an absolute path (only FIFO paths are supported, no URIs)", which, path);
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0) return std::unexpected(Error{fmt::format("{}: {}", which, path), errno, ErrorKind::BadRequest});
    if (!S_ISFIFO(st.st_mode)) return bad_request("{}: {} is not a FIFO", which, path);
    return {};
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

Result<void> check_stdio_paths(const StdioPaths& p) {
    TRY(check_fifo(p.in, "stdin"));
    TRY(check_fifo(p.out, "stdout"));
    TRY(check_fifo(p.err, "stderr"));
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
}

void ProcessIo::add_output(UniqueFd from, UniqueFd to) {
    std::lock_guard lk(mu_);
    outputs_.emplace_back([src = std::move(from), dst = std::move(to)]() mutable {
        // A FIFO write has no MSG_NOSIGNAL: a gone reader must give EPIPE, not end the shim.
        // SIGPIPE is sent to the writing thread, so blocking it here is enough.
        sigset_t pipe_set;
        sigemptyset(&pipe_set);
        sigaddset(&pipe_set, SIGPIPE);
        pthread_sigmask(SIG_BLOCK, &pipe_set, nullptr);
        char buf[65536];
        bool sink_ok = true;
        for (;;) {
            ssize_t n = ::read(src.get(), buf, sizeof buf);
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) break;
            if (sink_ok && !write_all_fd(dst.get(), buf, static_cast<std::size_t>(n))) sink_ok = false;
        }
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
