// guest_load: a small static load generator for the guest-side benchmarks (tools/bench-guest.sh,
// tools/bench-boot.sh). It runs inside the L2 guest's initramfs and inside L1, so it depends on
// nothing but libc (linked -static): block I/O through Linux AIO by raw syscalls (io_setup /
// io_submit / io_getevents; O_DIRECT on a block device is truly asynchronous there, and Debian's
// fio would drag librbd and friends into the initramfs), TCP streams, and an exec timer.
// Results are one line each, `GUEST-LOAD <mode> key=value ...`, timed with the running
// system's CLOCK_MONOTONIC (the guest's own clock when run in the guest). Never a pass/fail on
// speed: exit 0 when the load ran, 1 on an I/O or socket error, 2 on usage errors.
//
// usage:
//   guest_load blk DEV [--rw randread|read|write] [--bs BYTES] [--qd N] [--seconds S]
//                      [--count N] [--label NAME]
//   guest_load tcp-send HOST:PORT --mib N [--label NAME]   connect, send N MiB, wait for the
//                                                          peer to close (all data received)
//   guest_load tcp-recv HOST:PORT [--label NAME]           connect, read until EOF
//   guest_load tcp-sink --listen PORT                      accept one, read until EOF, close
//   guest_load tcp-source --listen PORT --mib N            accept one, send N MiB, close
//   guest_load udp-beat HOST:PORT [--interval-ms N]        a datagram every N ms (default 5),
//       each its sequence number, until killed: the heartbeat of a migrated guest
//   guest_load udp-gap --listen PORT [--seconds S]         receives udp-beat's datagrams until
//       SIGTERM/SIGINT (or S seconds) and reports the largest gap between two arrivals (this
//       system's clock) with the sequence numbers around it and how many never came: the
//       guest-visible downtime of a migration, measured outside the guest
//   guest_load time [--mark STRING] [--label NAME] -- CMD ARGS...
//       runs CMD with its stdout+stderr passed through, reports exec -> exit and exec -> the
//       first output line containing STRING (wall, this system's clock), CMD's exit code and
//       its rusage (page faults, user/system CPU, peak RSS)
//       and t0_ns, the exec's CLOCK_MONOTONIC (to line up with a stamp)
//   guest_load stamp [--label NAME] -- CMD ARGS...         prints CLOCK_MONOTONIC, then execs CMD
//       (dates a request, e.g. the API's InstanceStart, against a `time` run's mark)
//   guest_load tsc                                         this CPU's time-stamp counter: in a
//       KVM guest it counts from the vCPU's creation, which dates the guest's start-up
#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/aio_abi.h>
#include <linux/fs.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {

[[noreturn]] void usage(const char* why) {
    std::fprintf(stderr,
                 "guest_load: %s\n"
                 "usage: guest_load blk DEV [--rw randread|read|write] [--bs B] [--qd N] "
                 "[--seconds S] [--count N] [--label L]\n"
                 "       guest_load tcp-send HOST:PORT --mib N [--label L]\n"
                 "       guest_load tcp-recv HOST:PORT [--label L]\n"
                 "       guest_load tcp-sink --listen PORT\n"
                 "       guest_load tcp-source --listen PORT --mib N\n"
                 "       guest_load udp-beat HOST:PORT [--interval-ms N]\n"
                 "       guest_load udp-gap --listen PORT [--seconds S]\n"
                 "       guest_load time [--mark STRING] [--label L] -- CMD ARGS...\n"
                 "       guest_load stamp [--label L] -- CMD ARGS...\n"
                 "       guest_load tsc\n",
                 why);
    std::exit(2);
}

[[noreturn]] void die(const char* what) {
    std::fprintf(stderr, "guest_load: %s: %s\n", what, std::strerror(errno));
    std::exit(1);
}

uint64_t now_ns() {
    timespec ts{};
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<uint64_t>(ts.tv_sec) * 1000000000u + static_cast<uint64_t>(ts.tv_nsec);
}

// Options after the mode word: --key value pairs, plus positional words.
struct Args {
    std::vector<std::string> positional;
    std::vector<std::pair<std::string, std::string>> opts;
    const char* get(const char* key, const char* dflt) const {
        for (const auto& [k, v] : opts)
            if (k == key) return v.c_str();
        return dflt;
    }
};

Args parse(int argc, char** argv, int from) {
    Args a;
    for (int i = from; i < argc; ++i) {
        if (std::strncmp(argv[i], "--", 2) == 0 && argv[i][2] != '\0') {
            if (i + 1 >= argc) usage("option without a value");
            a.opts.emplace_back(argv[i] + 2, argv[i + 1]);
            ++i;
        } else {
            a.positional.emplace_back(argv[i]);
        }
    }
    return a;
}

uint64_t number(const char* s, const char* what) {
    char* end = nullptr;
    errno = 0;
    const unsigned long long v = std::strtoull(s, &end, 0);
    if (errno || end == s || *end != '\0') usage(what);
    return v;
}

// ---- block: Linux AIO by raw syscalls (no libaio in a static initramfs binary) ----

long io_setup(unsigned nr, aio_context_t* ctx) { return syscall(SYS_io_setup, nr, ctx); }
long io_submit(aio_context_t ctx, long n, iocb** cbs) { return syscall(SYS_io_submit, ctx, n, cbs); }
long io_getevents(aio_context_t ctx, long min, long max, io_event* ev) {
    return syscall(SYS_io_getevents, ctx, min, max, ev, nullptr);
}

// xorshift64*: offsets only need to be spread evenly and cost nothing.
struct Rng {
    uint64_t s;
    uint64_t next() {
        s ^= s >> 12;
        s ^= s << 25;
        s ^= s >> 27;
        return s * 2685821657736338717ull;
    }
};

double percentile_us(std::vector<uint32_t>& sorted_ns, double p) {
    if (sorted_ns.empty()) return 0;
    // Nearest rank, as fio reports its clat percentiles.
    size_t rank = static_cast<size_t>(p / 100.0 * static_cast<double>(sorted_ns.size()) + 0.999999);
    rank = std::clamp<size_t>(rank, 1, sorted_ns.size());
    return sorted_ns[rank - 1] / 1000.0;
}

int run_blk(const Args& a) {
    if (a.positional.size() != 1) usage("blk wants one device");
    const char* dev = a.positional[0].c_str();
    const std::string rw = a.get("rw", "randread");
    const uint64_t bs = number(a.get("bs", "4096"), "bad --bs");
    const uint64_t qd = number(a.get("qd", "1"), "bad --qd");
    const double seconds = std::strtod(a.get("seconds", "5"), nullptr);
    const uint64_t count = number(a.get("count", "0"), "bad --count");
    const char* label = a.get("label", "blk");
    if (rw != "randread" && rw != "read" && rw != "write") usage("--rw is randread, read or write");
    if (bs == 0 || bs % 4096 || bs > (16u << 20)) usage("--bs: a multiple of 4096, at most 16 MiB");
    if (qd == 0 || qd > 1024) usage("--qd: 1..1024");

    const bool writing = rw == "write";
    int fd = ::open(dev, (writing ? O_RDWR : O_RDONLY) | O_DIRECT | O_CLOEXEC);
    if (fd < 0) die(dev);
    uint64_t size = 0;
    if (ioctl(fd, BLKGETSIZE64, &size) != 0) {
        off_t end = lseek(fd, 0, SEEK_END);  // a regular file (tests on a build host)
        if (end < 0) die("size of the device");
        size = static_cast<uint64_t>(end);
    }
    const uint64_t blocks = size / bs;
    if (blocks == 0) usage("device smaller than one block");

    aio_context_t ctx = 0;
    if (io_setup(static_cast<unsigned>(qd), &ctx) != 0) die("io_setup");
    std::vector<iocb> cbs(qd);
    std::vector<iocb*> ready;
    std::vector<uint64_t> issued(qd);
    std::vector<io_event> events(qd);
    std::vector<uint32_t> lat_ns;
    lat_ns.reserve(1 << 16);
    Rng rng{now_ns() | 1};
    uint64_t next_seq = 0;
    for (uint64_t i = 0; i < qd; ++i) {
        void* buf = nullptr;
        if (posix_memalign(&buf, 4096, bs) != 0) die("buffer");
        std::memset(buf, 0x5a ^ static_cast<int>(i), bs);  // also faults the buffer in up front
        cbs[i] = iocb{};
        cbs[i].aio_fildes = static_cast<uint32_t>(fd);
        cbs[i].aio_lio_opcode = writing ? IOCB_CMD_PWRITE : IOCB_CMD_PREAD;
        cbs[i].aio_buf = reinterpret_cast<uintptr_t>(buf);
        cbs[i].aio_nbytes = bs;
        cbs[i].aio_data = i;
    }
    auto aim = [&](iocb& cb) {
        const uint64_t block = rw == "randread" ? rng.next() % blocks : next_seq++ % blocks;
        cb.aio_offset = static_cast<int64_t>(block * bs);
    };

    const uint64_t t0 = now_ns();
    const uint64_t stop_at = t0 + static_cast<uint64_t>(seconds * 1e9);
    uint64_t submitted = 0, done = 0, errors = 0;
    auto want_more = [&](uint64_t t) { return count ? submitted < count : t < stop_at; };
    for (uint64_t i = 0; i < qd && want_more(t0); ++i) {
        aim(cbs[i]);
        ready.push_back(&cbs[i]);
        ++submitted;
    }
    uint64_t t = now_ns();
    for (iocb* cb : ready) issued[cb->aio_data] = t;
    if (io_submit(ctx, static_cast<long>(ready.size()), ready.data()) != static_cast<long>(ready.size()))
        die("io_submit");
    uint64_t in_flight = ready.size();
    while (in_flight) {
        const long n = io_getevents(ctx, 1, static_cast<long>(qd), events.data());
        if (n < 0) {
            if (errno == EINTR) continue;
            die("io_getevents");
        }
        t = now_ns();
        ready.clear();
        for (long i = 0; i < n; ++i) {
            const uint64_t slot = events[i].data;
            if (events[i].res != static_cast<int64_t>(bs)) ++errors;
            const uint64_t l = t - issued[slot];
            lat_ns.push_back(static_cast<uint32_t>(std::min<uint64_t>(l, UINT32_MAX)));
            ++done;
            --in_flight;
            if (want_more(t)) {
                aim(cbs[slot]);
                ready.push_back(&cbs[slot]);
                ++submitted;
            }
        }
        if (!ready.empty()) {
            for (iocb* cb : ready) issued[cb->aio_data] = t;
            if (io_submit(ctx, static_cast<long>(ready.size()), ready.data()) != static_cast<long>(ready.size()))
                die("io_submit");
            in_flight += ready.size();
        }
    }
    const double elapsed = static_cast<double>(now_ns() - t0) / 1e9;
    std::sort(lat_ns.begin(), lat_ns.end());
    std::printf("GUEST-LOAD blk label=%s rw=%s bs=%" PRIu64 " qd=%" PRIu64 " ios=%" PRIu64
                " errors=%" PRIu64 " seconds=%.3f iops=%.0f mbps=%.2f lat_p50_us=%.1f lat_p90_us=%.1f"
                " lat_p99_us=%.1f lat_max_us=%.1f\n",
                label, rw.c_str(), bs, qd, done, errors, elapsed, static_cast<double>(done) / elapsed,
                static_cast<double>(done * bs) / elapsed / 1e6, percentile_us(lat_ns, 50),
                percentile_us(lat_ns, 90), percentile_us(lat_ns, 99),
                lat_ns.empty() ? 0.0 : lat_ns.back() / 1000.0);
    std::fflush(stdout);
    close(fd);
    return errors ? 1 : 0;
}

// ---- TCP streams ----

constexpr size_t kChunk = 128 * 1024;

sockaddr_in address(const std::string& host_port) {
    const auto colon = host_port.rfind(':');
    if (colon == std::string::npos) usage("want HOST:PORT");
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_port = htons(static_cast<uint16_t>(number(host_port.c_str() + colon + 1, "bad port")));
    if (inet_pton(AF_INET, host_port.substr(0, colon).c_str(), &sa.sin_addr) != 1) usage("bad IPv4 address");
    return sa;
}

int connect_to(const std::string& host_port) {
    const sockaddr_in sa = address(host_port);
    // The listener in L1 may come up a moment after the guest is ready: retry for ~10 s.
    for (int attempt = 0;; ++attempt) {
        int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (s < 0) die("socket");
        if (connect(s, reinterpret_cast<const sockaddr*>(&sa), sizeof sa) == 0) return s;
        close(s);
        if (attempt >= 100) die("connect");
        usleep(100000);
    }
}

int accept_one(const char* port) {
    int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (l < 0) die("socket");
    const int one = 1;
    setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_port = htons(static_cast<uint16_t>(number(port, "bad --listen port")));
    if (bind(l, reinterpret_cast<const sockaddr*>(&sa), sizeof sa) != 0) die("bind");
    if (listen(l, 1) != 0) die("listen");
    int s = accept4(l, nullptr, nullptr, SOCK_CLOEXEC);
    if (s < 0) die("accept");
    close(l);
    return s;
}

uint64_t send_all(int s, uint64_t bytes) {
    std::vector<char> buf(kChunk);
    for (size_t i = 0; i < buf.size(); ++i) buf[i] = static_cast<char>(i * 131 + 7);
    uint64_t sent = 0;
    while (sent < bytes) {
        const size_t n = static_cast<size_t>(std::min<uint64_t>(kChunk, bytes - sent));
        const ssize_t w = write(s, buf.data(), n);
        if (w < 0) {
            if (errno == EINTR) continue;
            die("send");
        }
        sent += static_cast<uint64_t>(w);
    }
    return sent;
}

uint64_t read_to_eof(int s) {
    std::vector<char> buf(kChunk);
    uint64_t got = 0;
    for (;;) {
        const ssize_t r = read(s, buf.data(), buf.size());
        if (r == 0) return got;
        if (r < 0) {
            if (errno == EINTR) continue;
            die("receive");
        }
        got += static_cast<uint64_t>(r);
    }
}

void report_tcp(const char* mode, const char* label, uint64_t bytes, uint64_t t0) {
    const double secs = static_cast<double>(now_ns() - t0) / 1e9;
    std::printf("GUEST-LOAD %s label=%s bytes=%" PRIu64 " seconds=%.3f mbps=%.2f\n", mode, label, bytes,
                secs, static_cast<double>(bytes) / secs / 1e6);
    std::fflush(stdout);
}

int run_tcp(const std::string& mode, const Args& a) {
    const char* label = a.get("label", mode.c_str());
    const uint64_t bytes = number(a.get("mib", "0"), "bad --mib") << 20;
    if (mode == "tcp-send" || mode == "tcp-recv") {
        if (a.positional.size() != 1) usage("want HOST:PORT");
        if (mode == "tcp-send" && bytes == 0) usage("tcp-send wants --mib N");
        int s = connect_to(a.positional[0]);
        const uint64_t t0 = now_ns();
        uint64_t moved;
        if (mode == "tcp-send") {
            moved = send_all(s, bytes);
            // The data has arrived when the receiver, having read to EOF, closes its end.
            shutdown(s, SHUT_WR);
            read_to_eof(s);
        } else {
            moved = read_to_eof(s);
        }
        report_tcp(mode.c_str(), label, moved, t0);
        close(s);
        return 0;
    }
    const char* port = a.get("listen", nullptr);
    if (!port) usage("want --listen PORT");
    int s = accept_one(port);
    const uint64_t t0 = now_ns();
    uint64_t moved;
    if (mode == "tcp-sink") {
        moved = read_to_eof(s);
    } else {
        if (bytes == 0) usage("tcp-source wants --mib N");
        moved = send_all(s, bytes);
    }
    close(s);
    report_tcp(mode.c_str(), label, moved, t0);
    return 0;
}

// ---- UDP heartbeat (migration downtime as the network sees it) ----

volatile sig_atomic_t g_stop = 0;
void on_stop(int) { g_stop = 1; }

int run_udp_beat(const Args& a) {
    if (a.positional.size() != 1) usage("udp-beat wants HOST:PORT");
    const sockaddr_in sa = address(a.positional[0]);
    const uint64_t interval_ms = number(a.get("interval-ms", "5"), "bad --interval-ms");
    if (interval_ms == 0 || interval_ms > 10000) usage("--interval-ms: 1..10000");
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (s < 0) die("socket");
    timespec next{};
    clock_gettime(CLOCK_MONOTONIC, &next);
    for (uint64_t seq = 0;; ++seq) {
        // A send that fails (no route yet, a full queue while the VM moves) is a lost beat,
        // which the receiver counts; the beats go on at the same cadence.
        (void)sendto(s, &seq, sizeof seq, 0, reinterpret_cast<const sockaddr*>(&sa), sizeof sa);
        next.tv_nsec += static_cast<long>(interval_ms * 1000000);
        while (next.tv_nsec >= 1000000000) {
            next.tv_nsec -= 1000000000;
            ++next.tv_sec;
        }
        while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &next, nullptr) == EINTR) {
        }
    }
}

int run_udp_gap(const Args& a) {
    const char* port = a.get("listen", nullptr);
    if (!port) usage("udp-gap wants --listen PORT");
    const uint64_t seconds = number(a.get("seconds", "0"), "bad --seconds");
    struct sigaction sa_stop{};
    sa_stop.sa_handler = on_stop;
    sigaction(SIGTERM, &sa_stop, nullptr);
    sigaction(SIGINT, &sa_stop, nullptr);
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (s < 0) die("socket");
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_port = htons(static_cast<uint16_t>(number(port, "bad --listen port")));
    if (bind(s, reinterpret_cast<const sockaddr*>(&sa), sizeof sa) != 0) die("bind");
    timeval tv{0, 100000};  // wake up to notice the signal or the deadline
    setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    const uint64_t t0 = now_ns();
    uint64_t packets = 0, first_seq = 0, last_seq = 0, last_ns = 0, max_gap_ns = 0, gap_from = 0, gap_to = 0;
    uint64_t reordered = 0;
    while (!g_stop && (seconds == 0 || now_ns() - t0 < seconds * 1000000000ull)) {
        uint64_t seq = 0;
        const ssize_t r = recv(s, &seq, sizeof seq, 0);
        if (r != static_cast<ssize_t>(sizeof seq)) continue;  // timeout, signal, or a stray datagram
        const uint64_t t = now_ns();
        if (packets == 0) {
            first_seq = seq;
        } else if (seq <= last_seq) {
            ++reordered;
            continue;
        } else if (t - last_ns > max_gap_ns) {
            max_gap_ns = t - last_ns;
            gap_from = last_seq;
            gap_to = seq;
        }
        ++packets;
        last_seq = seq;
        last_ns = t;
    }
    const uint64_t expected = packets ? last_seq - first_seq + 1 : 0;
    std::printf("GUEST-LOAD udp-gap packets=%" PRIu64 " lost=%" PRIu64 " reordered=%" PRIu64
                " max_gap_ms=%.1f gap_after_seq=%" PRIu64 " gap_before_seq=%" PRIu64 "\n",
                packets, expected - packets, reordered, static_cast<double>(max_gap_ns) / 1e6, gap_from, gap_to);
    std::fflush(stdout);
    return packets ? 0 : 1;
}

// ---- exec timer (boot benchmarks) ----

// The options before `--` of time and stamp; returns CMD ARGS... after it.
char** command_after_options(int argc, char** argv, const char** mark, const char** label) {
    int i = 2;
    for (; i < argc && std::strcmp(argv[i], "--") != 0; i += 2) {
        if (i + 1 >= argc) usage("option without a value");
        if (mark && std::strcmp(argv[i], "--mark") == 0) *mark = argv[i + 1];
        else if (std::strcmp(argv[i], "--label") == 0) *label = argv[i + 1];
        else usage("unknown option");
    }
    if (i + 1 >= argc) usage("want -- CMD ARGS...");
    return argv + i + 1;
}

int run_stamp(int argc, char** argv) {
    const char* label = "stamp";
    char** cmd = command_after_options(argc, argv, nullptr, &label);
    std::printf("GUEST-LOAD stamp label=%s mono_ns=%" PRIu64 "\n", label, now_ns());
    std::fflush(stdout);
    execvp(cmd[0], cmd);
    die(cmd[0]);
}

int run_time(int argc, char** argv) {
    const char* mark = nullptr;
    const char* label = "run";
    char** cmd = command_after_options(argc, argv, &mark, &label);
    int pipefd[2];
    if (pipe2(pipefd, O_CLOEXEC) != 0) die("pipe");
    const uint64_t t0 = now_ns();
    const pid_t pid = fork();
    if (pid < 0) die("fork");
    if (pid == 0) {
        dup2(pipefd[1], STDOUT_FILENO);
        dup2(pipefd[1], STDERR_FILENO);
        execvp(cmd[0], cmd);
        _exit(127);
    }
    close(pipefd[1]);
    uint64_t t_mark = 0;
    std::string line;
    char buf[4096];
    for (;;) {
        const ssize_t r = read(pipefd[0], buf, sizeof buf);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break;
        const uint64_t t = now_ns();
        (void)!write(STDOUT_FILENO, buf, static_cast<size_t>(r));
        if (mark && !t_mark) {
            line.append(buf, static_cast<size_t>(r));
            if (line.find(mark) != std::string::npos) t_mark = t;
            // Keep only the tail: the mark may straddle two reads.
            if (line.size() > 4096) line.erase(0, line.size() - 256);
        }
    }
    int status = 0;
    rusage ru{};
    while (wait4(pid, &status, 0, &ru) < 0 && errno == EINTR) {
    }
    const uint64_t t_exit = now_ns();
    const int rc = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    auto ms = [](const timeval& tv) { return static_cast<double>(tv.tv_sec) * 1e3 + static_cast<double>(tv.tv_usec) / 1e3; };
    // The child's own page faults and CPU time (its threads included; time in guest mode counts
    // as user time): under nested TCG a page fault costs on the order of 1 ms, so minflt
    // explains much of a VMM's start-up there.
    std::printf("\nGUEST-LOAD time label=%s rc=%d exec_to_exit_ms=%.1f exec_to_mark_ms=%.1f minflt=%ld majflt=%ld "
                "user_ms=%.0f sys_ms=%.0f maxrss_kb=%ld t0_ns=%" PRIu64 "\n", label, rc, static_cast<double>(t_exit - t0) / 1e6,
                t_mark ? static_cast<double>(t_mark - t0) / 1e6 : -1.0, ru.ru_minflt, ru.ru_majflt, ms(ru.ru_utime),
                ms(ru.ru_stime), ru.ru_maxrss, t0);
    std::fflush(stdout);
    return rc;
}

}  // namespace

int main(int argc, char** argv) {
    if (argc < 2) usage("no mode");
    const std::string mode = argv[1];
    if (mode == "time") return run_time(argc, argv);
    if (mode == "stamp") return run_stamp(argc, argv);
    if (mode == "tsc") {
        // KVM starts each vCPU's TSC at 0 when the VMM creates it (KVM_CREATE_VCPU); with the
        // kernel's TSC rate ("cpu MHz", tsc_khz under kvm-clock) this splits exec -> /init into
        // the VMM's set-up and the guest's boot.
        const unsigned long long cycles = __builtin_ia32_rdtsc();
        double mhz = 0;
        if (FILE* f = std::fopen("/proc/cpuinfo", "r")) {
            char line[256];
            while (std::fgets(line, sizeof line, f))
                if (std::sscanf(line, "cpu MHz : %lf", &mhz) == 1) break;
            std::fclose(f);
        }
        std::printf("GUEST-LOAD tsc cycles=%llu mhz=%.3f\n", cycles, mhz);
        return 0;
    }
    const Args a = parse(argc, argv, 2);
    if (mode == "blk") return run_blk(a);
    if (mode.rfind("tcp-", 0) == 0) return run_tcp(mode, a);
    if (mode == "udp-beat") return run_udp_beat(a);
    if (mode == "udp-gap") return run_udp_gap(a);
    usage("unknown mode");
}
