#include "vmm/serial_sink.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <doctest/doctest.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <future>
#include <string>
#include <thread>
#include <vector>

#include "devices/legacy/uart16550.hpp"
#include "vmm/event_loop.hpp"

using namespace kestrel;
using namespace std::chrono_literals;

namespace {

constexpr uint64_t kThr = 0, kLsr = 5;

// A pipe as a parent gives kestrel for stdout: both ends blocking, the write end inherited.
struct Pipe {
    int r = -1, w = -1;
    Pipe() {
        int fds[2];
        REQUIRE(::pipe2(fds, O_CLOEXEC) == 0);
        r = fds[0];
        w = fds[1];
    }
    ~Pipe() {
        close_reader();
        if (w >= 0) ::close(w);
    }
    void close_reader() {
        if (r >= 0) ::close(r);
        r = -1;
    }
    // Shrinks the pipe to one page so few bytes fill it; returns the capacity.
    size_t shrink() const {
        REQUIRE(::fcntl(w, F_SETPIPE_SZ, 4096) >= 0);
        return static_cast<size_t>(::fcntl(w, F_GETPIPE_SZ));
    }
    // Reads until `want` bytes came or 10 s passed.
    std::string read_exactly(size_t want) const {
        std::string s;
        const auto deadline = std::chrono::steady_clock::now() + 10s;
        char buf[4096];
        while (s.size() < want && std::chrono::steady_clock::now() < deadline) {
            pollfd p{r, POLLIN, 0};
            if (::poll(&p, 1, 100) <= 0) continue;
            ssize_t n = ::read(r, buf, std::min(sizeof buf, want - s.size()));
            if (n <= 0) break;
            s.append(buf, static_cast<size_t>(n));
        }
        return s;
    }
    bool readable() const {
        pollfd p{r, POLLIN, 0};
        return ::poll(&p, 1, 0) > 0;
    }
};

// The event loop on its own thread, as in the Vmm.
struct RunningLoop {
    std::unique_ptr<EventLoop> loop = EventLoop::create().value();
    VmControl ctl;
    std::thread thread;
    void start() {
        thread = std::thread([this] { loop->run(ctl); });
    }
    void stop() {
        ctl.request({ExitKind::PowerOff, 0, "test over"});
        if (thread.joinable()) thread.join();
    }
    ~RunningLoop() { stop(); }
};

std::string pattern(size_t n, size_t salt = 0) {
    std::string s(n, '\0');
    for (size_t i = 0; i < n; ++i) s[i] = static_cast<char>('!' + (i * 7 + i / 91 + salt) % 90);
    return s;
}

// Runs f (the vCPU side) on its own thread. If it has not returned within 10 s, `unblock`
// runs (e.g. closing the pipe's reader, so a blocked write fails) before the join, and the
// result is false: the test fails instead of hanging.
bool returns_promptly(const std::function<void()>& f, const std::function<void()>& unblock) {
    std::promise<void> done;
    auto fut = done.get_future();
    std::thread t([&] {
        f();
        done.set_value();
    });
    const bool ok = fut.wait_for(10s) == std::future_status::ready;
    if (!ok) unblock();
    t.join();
    return ok;
}

// THRE and TEMT: the guest sees its bytes leave, whatever the host does with them.
bool lsr_reads_empty(Uart16550& uart) {
    uint8_t v = 0;
    uart.read(kLsr, std::span(&v, 1));
    return v == 0x60;
}

void transmit(Uart16550& uart, const std::string& s) {
    for (char c : s) {
        const uint8_t b = static_cast<uint8_t>(c);
        uart.write(kThr, std::span(&b, 1));
    }
}

struct TempDir {
    std::filesystem::path path;
    TempDir() {
        char tmpl[] = "/tmp/kestrel-serial-XXXXXX";
        REQUIRE(::mkdtemp(tmpl) != nullptr);
        path = tmpl;
    }
    ~TempDir() { std::filesystem::remove_all(path); }
};

std::string slurp(const std::filesystem::path& p) {
    std::ifstream f(p, std::ios::binary);
    return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}

template <class Pred>
bool eventually(Pred pred) {
    const auto deadline = std::chrono::steady_clock::now() + 10s;
    while (!pred()) {
        if (std::chrono::steady_clock::now() > deadline) return false;
        std::this_thread::sleep_for(1ms);
    }
    return true;
}

}  // namespace

TEST_CASE("serial sink: stdout a pipe nobody reads: transmit returns at once, overflow counted, order kept when the reader resumes") {
    Pipe p;
    const size_t pipe_cap = p.shrink();
    RunningLoop rl;
    auto out = open_serial_stdout(p.w);
    REQUIRE(out);
    CHECK(out->method == SerialOutput::Method::kWrite);
    // The inherited description is untouched; ours is non-blocking.
    CHECK((::fcntl(p.w, F_GETFL) & O_NONBLOCK) == 0);
    CHECK((::fcntl(out->fd.get(), F_GETFL) & O_NONBLOCK) != 0);
    constexpr size_t kCap = 8192;
    auto sink = SerialSink::start(*rl.loop, std::move(*out), kCap);
    REQUIRE(sink);
    CHECK_FALSE((*sink)->drained_by_thread());
    Uart16550 uart(nullptr, (*sink)->buffer());

    // The loop is not running yet: nothing is written, so exactly the buffer's worth is kept.
    const std::string first = pattern(kCap + 3 * pipe_cap);
    CHECK(returns_promptly([&] { transmit(uart, first); }, [&] { p.close_reader(); }));
    CHECK((*sink)->dropped() == first.size() - kCap);
    CHECK(lsr_reads_empty(uart));

    // The loop fills the pipe and waits on EPOLLOUT; the reader then takes everything, in order.
    rl.start();
    CHECK(p.read_exactly(kCap) == first.substr(0, kCap));

    // Again with the loop draining while the guest floods: never a wait, and the accounting
    // adds up. Drops happen only with the buffer full, so the first kCap bytes all arrive
    // (once the loop has popped what the reader already took: the buffer starts empty).
    REQUIRE(eventually([&] { return (*sink)->buffer()->size() == 0; }));
    const uint64_t dropped_before = (*sink)->dropped();
    const std::string second = pattern(20 * kCap, 1);
    CHECK(returns_promptly([&] { transmit(uart, second); }, [&] { p.close_reader(); }));
    const uint64_t dropped = (*sink)->dropped() - dropped_before;
    CHECK(dropped > 0);
    const std::string got = p.read_exactly(second.size() - dropped);
    CHECK(got.size() == second.size() - dropped);
    CHECK(got.substr(0, kCap) == second.substr(0, kCap));
    CHECK_FALSE(p.readable());

    rl.stop();
    (*sink)->finish();
    CHECK((*sink)->dropped() == dropped_before + dropped);  // nothing was left at exit
}

TEST_CASE("serial sink: finish() gives up on a stuck pipe within its grace and counts what was left") {
    Pipe p;
    const size_t pipe_cap = p.shrink();
    RunningLoop rl;
    auto sink = SerialSink::start(*rl.loop, open_serial_stdout(p.w).value(), 8192).value();
    Uart16550 uart(nullptr, sink->buffer());
    // Buffered before the loop drains anything: one write then fills the one-page pipe. (Small
    // writes while the UART still transmits can leave a pipe page part-used and the pipe "full"
    // short of pipe_cap: Linux merges a write into the last page only when all of it fits.)
    transmit(uart, pattern(4096 + pipe_cap));
    rl.start();
    REQUIRE(eventually([&] { return sink->buffer()->size() <= 4096; }));  // the pipe is full
    rl.stop();
    const auto t0 = std::chrono::steady_clock::now();
    CHECK(returns_promptly([&] { sink->finish(50ms); }, [&] { p.close_reader(); }));
    CHECK(std::chrono::steady_clock::now() - t0 < 2s);
    CHECK(sink->dropped() == 4096);  // what the pipe could not take
    CHECK(p.read_exactly(pipe_cap) == pattern(pipe_cap));
}

TEST_CASE("serial sink: a reader that went away is counted drops, never SIGPIPE") {
    Pipe p;
    RunningLoop rl;
    auto sink = SerialSink::start(*rl.loop, open_serial_stdout(p.w).value()).value();
    rl.start();
    p.close_reader();
    Uart16550 uart(nullptr, sink->buffer());
    transmit(uart, "abc");
    // SIGPIPE's default action would have ended this process.
    CHECK(eventually([&] { return sink->dropped() == 3; }));
    transmit(uart, "de");
    CHECK(eventually([&] { return sink->dropped() == 5; }));
    sigset_t pending;
    sigemptyset(&pending);
    ::sigpending(&pending);
    CHECK(sigismember(&pending, SIGPIPE) == 0);
}

TEST_CASE("serial sink: the writer thread (blocking outputs) never holds up the vCPU or finish()") {
    Pipe p;
    const size_t pipe_cap = p.shrink();
    RunningLoop rl;
    // A blocking description written with write(2) that blocks: what an unpollable output
    // (an NFS file, a frozen disk) looks like to the writer thread.
    SerialOutput out{UniqueFd(::fcntl(p.w, F_DUPFD_CLOEXEC, 3)), SerialOutput::Method::kBlocking, "test pipe"};
    auto sink = SerialSink::start(*rl.loop, std::move(out), 8192).value();
    CHECK(sink->drained_by_thread());
    Uart16550 uart(nullptr, sink->buffer());
    const std::string sent = pattern(8192 + 4 * pipe_cap);
    CHECK(returns_promptly([&] { transmit(uart, sent); }, [&] { p.close_reader(); }));
    REQUIRE(eventually([&] { return p.readable(); }));
    const auto t0 = std::chrono::steady_clock::now();
    sink->finish(50ms);  // the writer is blocked in write(2) now
    CHECK(std::chrono::steady_clock::now() - t0 < 2s);
    // Everything not popped is dropped; the chunk the stuck write holds counts too.
    CHECK(sink->dropped() >= sent.size() - pipe_cap);
    CHECK(p.read_exactly(pipe_cap) == sent.substr(0, pipe_cap));
    p.close_reader();  // releases the writer: its late result changes nothing
    std::this_thread::sleep_for(20ms);
    CHECK(sink->dropped() <= sent.size());
}

TEST_CASE("serial sink: --serial file: appends, never truncates") {
    TempDir d;
    const auto path = d.path / "console.log";
    {
        std::ofstream(path) << "earlier run\n";
    }
    RunningLoop rl;
    auto out = open_serial_file(path.string());
    REQUIRE(out);
    auto sink = SerialSink::start(*rl.loop, std::move(*out)).value();
    CHECK(sink->drained_by_thread());  // a regular file cannot be polled
    Uart16550 uart(nullptr, sink->buffer());
    transmit(uart, "this run\n");
    sink->finish();
    CHECK(slurp(path) == "earlier run\nthis run\n");
    CHECK(sink->dropped() == 0);
}

TEST_CASE("serial sink: --serial file:/dev/full drops and counts, without stopping anything") {
    RunningLoop rl;
    auto out = open_serial_file("/dev/full");
    REQUIRE(out);
    auto sink = SerialSink::start(*rl.loop, std::move(*out)).value();
    CHECK(sink->drained_by_thread());  // /dev/full cannot be polled (epoll: EPERM)
    rl.start();
    Uart16550 uart(nullptr, sink->buffer());
    const std::string sent = pattern(200000);
    CHECK(returns_promptly([&] { transmit(uart, sent); }, [] {}));
    CHECK(eventually([&] { return sink->dropped() == sent.size(); }));
    CHECK(lsr_reads_empty(uart));
}

TEST_CASE("serial sink: --serial file: on a FIFO needs a reader; one that never reads stalls nothing") {
    TempDir d;
    const auto fifo = d.path / "console.fifo";
    REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
    auto none = open_serial_file(fifo.string());
    REQUIRE_FALSE(none);
    CHECK(none.error().what().find("no reader") != std::string::npos);

    const int reader = ::open(fifo.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    REQUIRE(reader >= 0);
    RunningLoop rl;
    auto sink = SerialSink::start(*rl.loop, open_serial_file(fifo.string()).value(), 8192).value();
    CHECK_FALSE(sink->drained_by_thread());
    rl.start();
    Uart16550 uart(nullptr, sink->buffer());
    const std::string sent = pattern(1 << 20);
    CHECK(returns_promptly([&] { transmit(uart, sent); }, [&] { ::close(reader); }));
    rl.stop();
    const auto t0 = std::chrono::steady_clock::now();
    sink->finish(50ms);
    CHECK(std::chrono::steady_clock::now() - t0 < 2s);
    // What the FIFO holds went out; everything else is counted; the first buffer's worth was
    // never dropped, so it leads, in order.
    std::string got;
    char buf[4096];
    for (ssize_t n; (n = ::read(reader, buf, sizeof buf)) > 0;) got.append(buf, static_cast<size_t>(n));
    CHECK(got.size() + sink->dropped() == sent.size());
    CHECK(got.substr(0, 8192) == sent.substr(0, 8192));
    ::close(reader);
}
