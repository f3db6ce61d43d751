#include "cni-shim/shim/stdio.hpp"

#include <fcntl.h>
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

TEST_CASE("check_stdio_paths accepts only absolute FIFO paths") {
    TempDir d;
    std::string f = d.fifo("out");
    std::string regular = (d.p / "file").string();
    std::ofstream(regular) << "x";
    CHECK(check_stdio_paths({"", f, "", false}));
    CHECK(check_stdio_paths({"", "", "", false}));
    CHECK_FALSE(check_stdio_paths({"", regular, "", false}));           // would write into a file
    CHECK_FALSE(check_stdio_paths({"", "relative/fifo", "", false}));
    CHECK_FALSE(check_stdio_paths({"", "binary:///bin/logger", "", false}));  // URIs not supported
    CHECK_FALSE(check_stdio_paths({(d.p / "missing").string(), "", "", false}));
    CHECK_FALSE(check_stdio_paths({"", f, f, true}));  // a terminal has no stderr
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
