#include "vmm/serial_sink.hpp"

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <ctime>
#include <mutex>
#include <system_error>
#include <thread>

#include "vmm/base/log.hpp"
#include "vmm/seccomp/seccomp.hpp"

namespace kestrel {

struct SerialSink::State {
    SerialOutput out;
    bool may_raise_sigpipe = false;  // a pipe or FIFO written with write(2)
    bool by_thread = false;
    // The eventfd the buffer's on_data bumps (non-blocking). Shared with that callback, which
    // the UART's reference to the buffer may keep beyond the sink.
    std::shared_ptr<UniqueFd> wake;
    std::shared_ptr<SerialTxBuffer> buffer;
    // Poll mode: held while draining, so finish() may run while the event loop still does
    // (it never waits long: every write under it is non-blocking).
    std::mutex drain_mu;
    bool reader_gone = false;        // EPIPE: a pipe's reader never comes back
    std::array<uint8_t, 16 * 1024> scratch{};  // one drainer at a time: loop, writer or finish()

    // Writer thread only.
    std::atomic<bool> stop{false};
    std::mutex mu;
    std::condition_variable cv;
    bool writer_done = false;
};

namespace {

using Method = SerialOutput::Method;

// write(2) where a closed reader yields EPIPE instead of a process-killing SIGPIPE, without
// changing the process-wide disposition: block SIGPIPE in this thread and swallow the one our
// write raised (POSIX leaves a thread-directed signal pending while blocked).
ssize_t write_no_sigpipe(int fd, const uint8_t* data, size_t len) {
    sigset_t pipe_set, old_set, pending;
    sigemptyset(&pipe_set);
    sigaddset(&pipe_set, SIGPIPE);
    sigemptyset(&pending);
    ::sigpending(&pending);
    const bool was_pending = sigismember(&pending, SIGPIPE) == 1;
    ::pthread_sigmask(SIG_BLOCK, &pipe_set, &old_set);
    ssize_t n = ::write(fd, data, len);
    const int err = errno;
    if (n < 0 && err == EPIPE && !was_pending) {
        const struct timespec zero {};
        while (::sigtimedwait(&pipe_set, nullptr, &zero) < 0 && errno == EINTR) {
        }
    }
    ::pthread_sigmask(SIG_SETMASK, &old_set, nullptr);
    errno = err;
    return n;
}

// Bytes written, or -errno (EINTR retried; a zero-byte write counts as EIO).
ssize_t write_out(const SerialSink::State& s, std::span<const uint8_t> bytes) {
    for (;;) {
        const int fd = s.out.fd.get();
        ssize_t n;
        if (s.out.method == Method::kSend)
            n = ::send(fd, bytes.data(), bytes.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
        else if (s.may_raise_sigpipe)
            n = write_no_sigpipe(fd, bytes.data(), bytes.size());
        else
            n = ::write(fd, bytes.data(), bytes.size());
        if (n > 0) return n;
        if (n == 0) return -EIO;
        if (errno != EINTR) return -errno;
    }
}

void drop_after_error(SerialSink::State& s, size_t n, int err) {
    // The reason is only formatted for the one warning the buffer logs.
    std::string why;
    if (s.buffer->dropped() == 0)
        why = fmt::format("writing to {} failed ({}); output is dropped", s.out.name, std::strerror(err));
    s.buffer->drop(n, why);
    if (err == EPIPE) s.reader_gone = true;
}

enum class Drained { kEmpty, kWouldBlock };

// Writes until the buffer is empty or the output would block. Never blocks itself.
Drained drain_nonblocking(SerialSink::State& s) {
    std::lock_guard lk(s.drain_mu);
    for (;;) {
        const size_t n = s.buffer->peek(s.scratch);
        if (n == 0) return Drained::kEmpty;
        if (s.reader_gone) {
            s.buffer->drop(n, "");
            continue;
        }
        const ssize_t w = write_out(s, std::span(s.scratch.data(), n));
        if (w > 0) {
            s.buffer->pop(static_cast<size_t>(w));
            continue;
        }
        if (w == -EAGAIN || w == -EWOULDBLOCK) return Drained::kWouldBlock;
        drop_after_error(s, n, static_cast<int>(-w));
    }
}

// The writer thread: may block in write(2) for as long as the output takes. Touches only
// `s` (kept alive by its shared_ptr), so it may outlive the sink, and logs only through the
// buffer, which stops logging once closed.
void writer_main(std::shared_ptr<SerialSink::State> sp) {
    seccomp::apply(seccomp::ThreadKind::Serial);
    SerialSink::State& s = *sp;
    for (;;) {
        const size_t n = s.buffer->peek(s.scratch);
        if (n == 0) {
            if (s.stop.load()) break;
            pollfd p{s.wake->get(), POLLIN, 0};
            if (::poll(&p, 1, -1) > 0) {
                uint64_t v;
                [[maybe_unused]] ssize_t r = ::read(s.wake->get(), &v, sizeof v);
            }
            continue;
        }
        const ssize_t w = s.reader_gone ? -EPIPE : write_out(s, std::span(s.scratch.data(), n));
        if (w > 0) {
            s.buffer->pop(static_cast<size_t>(w));
        } else if (w == -EAGAIN || w == -EWOULDBLOCK) {
            // Only an inherited stdout that its owner made non-blocking (a pipe or terminal
            // we could not reopen): wait for room, bounded so a stop request is seen.
            pollfd p{s.out.fd.get(), POLLOUT, 0};
            ::poll(&p, 1, 50);
        } else {
            drop_after_error(s, n, static_cast<int>(-w));
        }
    }
    {
        std::lock_guard lk(s.mu);
        s.writer_done = true;
    }
    s.cv.notify_all();
}

Result<int> dup_cloexec(int fd) {
    int d = ::fcntl(fd, F_DUPFD_CLOEXEC, 3);
    if (d < 0) return fail_errno("--serial stdio: cannot duplicate stdout (fd {})", fd);
    return d;
}

}  // namespace

Result<SerialOutput> open_serial_stdout(int fd) {
    struct stat st {};
    if (::fstat(fd, &st) != 0) return fail_errno("--serial stdio: stdout (fd {}) is not open", fd);
    if (S_ISSOCK(st.st_mode)) return SerialOutput{UniqueFd(TRY(dup_cloexec(fd))), Method::kSend, "stdout"};
    // A pty master cannot be reopened: its /proc link names /dev/ptmx, which makes a new pty.
    int pty_number = 0;
    const bool pty_master = S_ISCHR(st.st_mode) && ::ioctl(fd, TIOCGPTN, &pty_number) == 0;
    if ((S_ISFIFO(st.st_mode) || S_ISCHR(st.st_mode)) && !pty_master) {
        // A description of our own, so O_NONBLOCK stays ours: setting it on the inherited one
        // would change it for the shell or the parent sharing it.
        const std::string proc = fmt::format("/proc/self/fd/{}", fd);
        int own = ::open(proc.c_str(), O_WRONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
        if (own >= 0) return SerialOutput{UniqueFd(own), Method::kWrite, "stdout"};
        // ENXIO: a pipe whose reader is gone; or no /proc. The writer thread copes with both.
        log::debug("serial: cannot reopen stdout through {} ({}); a writer thread takes it", proc,
                   std::strerror(errno));
    }
    // A regular file: a second description would have its own offset and overwrite.
    return SerialOutput{UniqueFd(TRY(dup_cloexec(fd))), Method::kBlocking, "stdout"};
}

Result<SerialOutput> open_serial_file(const std::string& path) {
    // O_APPEND | O_CREAT without O_TRUNC: a mistyped path onto an existing file loses nothing.
    // O_NONBLOCK: a FIFO without a reader fails at once (ENXIO) rather than hanging the open,
    // and a terminal does not wait for carrier; regular files ignore it.
    int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_NONBLOCK | O_NOCTTY | O_CLOEXEC, 0644);
    if (fd < 0) {
        struct stat st {};
        if (errno == ENXIO && ::stat(path.c_str(), &st) == 0) {
            if (S_ISFIFO(st.st_mode))
                return fail("--serial file:{}: the FIFO has no reader; start the reader first", path);
            if (S_ISSOCK(st.st_mode))
                return fail("--serial file:{}: is a unix socket, not a file", path);
        }
        return fail_errno("--serial: cannot open '{}'", path);
    }
    SerialOutput out{UniqueFd(fd), Method::kWrite, path};
    struct stat st {};
    if (::fstat(fd, &st) != 0) return fail_errno("--serial: fstat '{}'", path);
    if (!S_ISFIFO(st.st_mode) && !S_ISCHR(st.st_mode)) {
        // A regular file or block device: its writes cannot be polled; the writer thread does
        // them, blocking, on this description of our own.
        out.method = Method::kBlocking;
        if (::fcntl(fd, F_SETFL, O_APPEND) != 0) return fail_errno("--serial: fcntl '{}'", path);
    }
    return out;
}

Result<std::unique_ptr<SerialSink>> SerialSink::start(EventRegistry& loop, SerialOutput out,
                                                      size_t capacity) {
    auto s = std::make_shared<State>();
    std::unique_ptr<SerialSink> sink(new SerialSink(loop, s));
    if (!out.fd.valid()) return sink;  // --serial none: the UART gets no buffer
    struct stat st {};
    if (::fstat(out.fd.get(), &st) == 0)
        s->may_raise_sigpipe = S_ISFIFO(st.st_mode) || (S_ISSOCK(st.st_mode) && out.method != Method::kSend);
    s->out = std::move(out);
    const int efd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (efd < 0) return fail_errno("serial output: eventfd");
    s->wake = std::make_shared<UniqueFd>(efd);
    // Runs on a vCPU thread: an eventfd write, which never blocks (EFD_NONBLOCK; the counter
    // cannot near its 2^64 - 2 limit at one wake-up per drained batch).
    s->buffer = std::make_shared<SerialTxBuffer>(capacity, [wake = s->wake] {
        uint64_t one = 1;
        [[maybe_unused]] ssize_t n = ::write(wake->get(), &one, sizeof one);
    });

    s->by_thread = s->out.method == Method::kBlocking;
    if (!s->by_thread) {
        // Edge-triggered: registered once; an edge comes whenever the reader makes room, and a
        // wasted wake-up only finds the buffer empty.
        auto added = loop.add(s->out.fd.get(), EPOLLOUT | EPOLLET, [s](uint32_t) { drain_nonblocking(*s); });
        if (!added && added.error().sys_errno == EPERM) {
            // Cannot be polled (/dev/full, /dev/null). The description is ours: make the
            // writer's writes plainly blocking rather than spin on a would-be EAGAIN.
            s->by_thread = true;
            const int fl = ::fcntl(s->out.fd.get(), F_GETFL);
            if (fl >= 0) (void)::fcntl(s->out.fd.get(), F_SETFL, fl & ~O_NONBLOCK);
        } else if (!added) {
            return std::unexpected(context(added.error(), fmt::format("serial output {}", s->out.name)));
        } else {
            auto woken = loop.add(efd, EPOLLIN, [s](uint32_t) {
                uint64_t v;
                [[maybe_unused]] ssize_t n = ::read(s->wake->get(), &v, sizeof v);
                drain_nonblocking(*s);
            });
            if (!woken) {
                (void)loop.remove(s->out.fd.get());
                return std::unexpected(woken.error());
            }
        }
    }
    if (s->by_thread) {
        // Every signal blocked: SIGINT/SIGTERM belong to the event loop's signalfd and the
        // vCPU kick signal to vCPU threads; this thread is never interrupted.
        sigset_t all, old;
        sigfillset(&all);
        ::pthread_sigmask(SIG_BLOCK, &all, &old);
        try {
            std::thread(writer_main, s).detach();
        } catch (const std::system_error& e) {
            ::pthread_sigmask(SIG_SETMASK, &old, nullptr);
            return fail("serial output: cannot start its writer thread: {}", e.what());
        }
        ::pthread_sigmask(SIG_SETMASK, &old, nullptr);
    }
    log::debug("serial output to {}: {}", s->out.name,
               s->by_thread ? "writer thread" : "non-blocking writes on the event loop");
    return sink;
}

SerialSink::~SerialSink() { finish(); }

std::shared_ptr<SerialTxBuffer> SerialSink::buffer() const { return state_->buffer; }

uint64_t SerialSink::dropped() const { return state_->buffer ? state_->buffer->dropped() : 0; }
uint64_t SerialSink::written() const { return state_->buffer ? state_->buffer->written() : 0; }

bool SerialSink::drained_by_thread() const { return state_->by_thread; }

void SerialSink::finish(std::chrono::milliseconds grace) {
    if (finished_) return;
    finished_ = true;
    State& s = *state_;
    if (!s.buffer) return;
    const auto deadline = std::chrono::steady_clock::now() + grace;
    if (s.by_thread) {
        s.stop.store(true);
        uint64_t one = 1;
        [[maybe_unused]] ssize_t n = ::write(s.wake->get(), &one, sizeof one);
        std::unique_lock lk(s.mu);
        // A writer stuck in write(2) is left there; process exit ends it.
        s.cv.wait_until(lk, deadline, [&] { return s.writer_done; });
    } else {
        (void)loop_.remove(s.wake->get());
        (void)loop_.remove(s.out.fd.get());
        // drain_mu keeps a callback the loop had already picked up from running alongside.
        while (drain_nonblocking(s) == Drained::kWouldBlock) {
            const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                deadline - std::chrono::steady_clock::now());
            if (left.count() <= 0) break;
            pollfd p{s.out.fd.get(), POLLOUT, 0};
            ::poll(&p, 1, static_cast<int>(left.count()));
        }
    }
    const size_t left_behind = s.buffer->close();
    if (const uint64_t total = s.buffer->dropped(); total > 0)
        log::info("serial output to {}: {} bytes dropped in all, {} of them still buffered at exit",
                  s.out.name, total, left_behind);
}

}  // namespace kestrel
