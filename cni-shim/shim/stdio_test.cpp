#include "cni-shim/shim/stdio.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <thread>

#include <doctest/doctest.h>

using namespace kestrel;
using namespace kestrel::shim;

namespace {
struct TempDir {
    std::filesystem::path p;
    TempDir() {
        char t[] = "/tmp/kestrel-stdio-XXXXXX";
        p = ::mkdtemp(t);
    }
    ~TempDir() { std::filesystem::remove_all(p); }
    std::string fifo(const char* name) const {
        std::string f = (p / name).string();
        REQUIRE(::mkfifo(f.c_str(), 0600) == 0);
        return f;
    }
};

std::string read_all(int fd) {
    std::string s;
    char buf[4096];
    for (;;) {
        ssize_t n = ::read(fd, buf, sizeof buf);
        if (n <= 0) break;
        s.append(buf, static_cast<std::size_t>(n));
    }
    return s;
}
}  // namespace

TEST_CASE("check_stdio_paths: FIFO paths, and log URIs for stdout/stderr") {
    TempDir d;
    std::string f = d.fifo("out");
    std::string regular = (d.p / "file").string();
    std::ofstream(regular) << "x";
    CHECK(check_stdio_paths({"", f, "", false}));
    CHECK(check_stdio_paths({"", "", "", false}));
    CHECK(check_stdio_paths({"", "fifo://" + f, "", false}));
    CHECK_FALSE(check_stdio_paths({"", regular, "", false}));           // a plain path must be a FIFO
    CHECK_FALSE(check_stdio_paths({"", "relative/fifo", "", false}));
    CHECK(check_stdio_paths({"", "binary:///bin/logger", "binary:///bin/logger", false}));
    CHECK(check_stdio_paths({"", "file://" + regular, "file://" + regular, false}));  // asked for by name
    CHECK_FALSE(check_stdio_paths({"file://" + regular, "", "", false}));  // stdin is a FIFO
    CHECK_FALSE(check_stdio_paths({(d.p / "missing").string(), "", "", false}));
    CHECK_FALSE(check_stdio_paths({"", f, f, true}));  // a terminal has no stderr
}

TEST_CASE("parse_output_uri: containerd's fifo, file and binary log URIs") {
    auto ok = [](const std::string& u) {
        auto r = parse_output_uri(u, "stdout");
        REQUIRE_MESSAGE(r, u);
        return *r;
    };
    auto bad = [](const std::string& u) {
        auto r = parse_output_uri(u, "stdout");
        REQUIRE_FALSE_MESSAGE(r, u);
        return std::string(r.error().what());
    };
    CHECK(ok("/run/x/out").kind == OutputUri::Kind::Fifo);
    CHECK(ok("fifo:///run/x/out").path == "/run/x/out");
    auto file = ok("file:///var/log/pods/a%20b/0.log");
    CHECK(file.kind == OutputUri::Kind::File);
    CHECK(file.path == "/var/log/pods/a b/0.log");
    auto bin = ok("binary:///usr/bin/logger?--tag=web&debug&x=a%26b");
    CHECK(bin.kind == OutputUri::Kind::Binary);
    CHECK(bin.path == "/usr/bin/logger");
    CHECK(bin.args == std::vector<std::string>{"--tag", "web", "debug", "x", "a&b"});
    CHECK(bad("http://example.com/x").find("unsupported scheme") != std::string::npos);
    CHECK(bad("file://host/x").find("a host") != std::string::npos);
    CHECK(bad("file:///x?a=b").find("only binary://") != std::string::npos);
    CHECK(bad("file:///a/../etc/passwd").find("without '..'") != std::string::npos);
    CHECK(bad("file:///a%2").find("percent") != std::string::npos);
    CHECK(bad("file:///a%00b").find("without '..'") != std::string::npos);  // a NUL
    CHECK(bad("binary:///l?=v").find("bad argument") != std::string::npos);
    CHECK(bad("file://").find("absolute") != std::string::npos);
}

TEST_CASE("start_logger runs a binary:// logging program with stdout on fd 3 and stderr on fd 4") {
    TempDir d;
    const std::string script = (d.p / "logger").string(), out = (d.p / "log").string();
    // Copies fd 3 and fd 4 into one file each and records its arguments and environment;
    // closing fd 5 says it is ready.
    std::ofstream(script) << "#!/bin/sh\nexec 5>&-\necho \"$* $CONTAINER_ID $CONTAINER_NAMESPACE\" > " << out
                          << ".args\ncat <&3 > " << out << ".1 &\ncat <&4 > " << out << ".2\nwait\n";
    REQUIRE(::chmod(script.c_str(), 0755) == 0);
    {
        ProcessIo io;
        auto fds = io.start_logger(*parse_output_uri("binary://" + script + "?-t=x", "stdout"), "c1", "k8s.io");
        REQUIRE_MESSAGE(fds, fds.error().what());
        // As the agent's streams would: a socket pair per stream, the shim copies.
        int a[2], b[2];
        REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, a) == 0);
        REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, b) == 0);
        io.add_output(UniqueFd(a[0]), std::move(fds->first));
        io.add_output(UniqueFd(b[0]), std::move(fds->second));
        REQUIRE(::write(a[1], "to stdout\n", 10) == 10);
        REQUIRE(::write(b[1], "to stderr\n", 10) == 10);
        ::close(a[1]);
        ::close(b[1]);
        io.wait_output();
    }  // the destructor waits for the logger
    auto slurp = [](const std::string& p) {
        std::ifstream in(p);
        return std::string(std::istreambuf_iterator<char>(in), {});
    };
    CHECK(slurp(out + ".1") == "to stdout\n");
    CHECK(slurp(out + ".2") == "to stderr\n");
    CHECK(slurp(out + ".args") == "-t x c1 k8s.io\n");

    ProcessIo io;
    auto missing = io.start_logger(*parse_output_uri("binary://" + (d.p / "nope").string(), "stdout"), "c1", "ns");
    REQUIRE_FALSE(missing);
    CHECK(std::string(missing.error().what()).find("cannot run logging program " + (d.p / "nope").string() + ": No such file") !=
          std::string::npos);
}

TEST_CASE("open_fifo_writer waits for a reader and gives up without one") {
    TempDir d;
    std::string f = d.fifo("out");
    auto none = open_fifo_writer(f, std::chrono::milliseconds(100));
    CHECK_FALSE(none);
    UniqueFd reader(::open(f.c_str(), O_RDONLY | O_NONBLOCK));
    REQUIRE(reader);
    auto w = open_fifo_writer(f, std::chrono::milliseconds(100));
    REQUIRE(w);
    CHECK((::fcntl(w->get(), F_GETFL) & O_NONBLOCK) == 0);
}

TEST_CASE("ProcessIo copies an agent stream into a FIFO to its end") {
    TempDir d;
    std::string f = d.fifo("out");
    UniqueFd reader(::open(f.c_str(), O_RDONLY | O_NONBLOCK));
    REQUIRE(reader);
    int sp[2];
    REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM, 0, sp) == 0);
    UniqueFd agent_side(sp[0]), shim_side(sp[1]);
    ProcessIo io;
    io.add_output(std::move(shim_side), *open_fifo_writer(f, std::chrono::seconds(1)));
    ::fcntl(reader.get(), F_SETFL, 0);
    std::string big(300000, 'x');  // more than a pipe holds: the copy must keep going
    big += "end\n";
    std::thread writer([&] {
        (void)::write(agent_side.get(), big.data(), big.size());
        agent_side.reset();
    });
    std::string got = read_all(reader.get());
    writer.join();
    io.wait_output();
    CHECK(got.size() == big.size());
    CHECK(got == big);
}

TEST_CASE("ProcessIo closes a process's FIFOs together, once the reader took what they hold") {
    // containerd's CRI ends an attach at the first output FIFO's EOF: stderr's EOF must not
    // come while stdout still holds the process's last line.
    TempDir d;
    std::string fo = d.fifo("out"), fe = d.fifo("err");
    UniqueFd rout(::open(fo.c_str(), O_RDONLY | O_NONBLOCK)), rerr(::open(fe.c_str(), O_RDONLY | O_NONBLOCK));
    REQUIRE(rout);
    REQUIRE(rerr);
    int a[2], b[2];
    REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, a) == 0);
    REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, b) == 0);
    ProcessIo io;
    io.add_output(UniqueFd(a[0]), *open_fifo_writer(fo, std::chrono::seconds(1)));
    io.add_output(UniqueFd(b[0]), *open_fifo_writer(fe, std::chrono::seconds(1)));
    REQUIRE(::write(a[1], "attached:bye\n", 13) == 13);
    ::close(a[1]);
    ::close(b[1]);  // both streams end; stdout's line is not read yet
    auto hung_up = [](int fd, int ms) {
        pollfd p{fd, POLLIN, 0};
        return ::poll(&p, 1, ms) == 1 && (p.revents & POLLHUP);
    };
    CHECK_FALSE(hung_up(rerr.get(), 300));
    CHECK_FALSE(hung_up(rout.get(), 0));
    char buf[64];
    CHECK(::read(rout.get(), buf, sizeof buf) == 13);
    CHECK(hung_up(rerr.get(), 2000));
    CHECK(hung_up(rout.get(), 2000));
    io.wait_output();
}

TEST_CASE("ProcessIo keeps draining the agent stream after the FIFO reader went away") {
    TempDir d;
    std::string f = d.fifo("out");
    UniqueFd reader(::open(f.c_str(), O_RDONLY | O_NONBLOCK));
    int sp[2];
    REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM, 0, sp) == 0);
    UniqueFd agent_side(sp[0]);
    ProcessIo io;
    io.add_output(UniqueFd(sp[1]), *open_fifo_writer(f, std::chrono::seconds(1)));
    reader.reset();  // containerd gone
    std::string big(1 << 20, 'y');
    std::thread writer([&] {
        // Would block forever if the copier stopped reading at EPIPE.
        CHECK(::write(agent_side.get(), big.data(), big.size()) == static_cast<ssize_t>(big.size()));
        agent_side.reset();
    });
    writer.join();
    io.wait_output();
}

TEST_CASE("ProcessIo copies a stdin FIFO to the agent and closes the stream at the FIFO's EOF") {
    TempDir d;
    std::string f = d.fifo("in");
    int sp[2];
    REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM, 0, sp) == 0);
    UniqueFd agent_side(sp[0]);
    ProcessIo io;
    REQUIRE(io.add_stdin(*open_fifo_reader(f), UniqueFd(sp[1])));
    {
        UniqueFd w(::open(f.c_str(), O_WRONLY));
        REQUIRE(w);
        REQUIRE(::write(w.get(), "hello\n", 6) == 6);
    }  // containerd closes its end: EOF
    CHECK(read_all(agent_side.get()) == "hello\n");  // returns only once the shim closed its side
}

TEST_CASE("close_stdin ends a stdin nobody ever opened") {
    TempDir d;
    std::string f = d.fifo("in");
    int sp[2];
    REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM, 0, sp) == 0);
    UniqueFd agent_side(sp[0]);
    ProcessIo io;
    REQUIRE(io.add_stdin(*open_fifo_reader(f), UniqueFd(sp[1])));
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    io.close_stdin();
    CHECK(read_all(agent_side.get()).empty());  // EOF arrives
}
