#include "devices/virtio/vsock/unix_socket.hpp"

#include <doctest/doctest.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <cstring>

#include "devices/virtio/vsock/test_temp_dir.hpp"

using namespace kestrel;
using kestrel::test::TempDir;

namespace {

bool exists(const std::string& p) {
    struct stat st{};
    return ::lstat(p.c_str(), &st) == 0;
}

// A socket file nobody listens on, as a crashed earlier run leaves behind.
void make_stale_socket(const std::string& path) {
    int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
    REQUIRE(fd >= 0);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::strcpy(a.sun_path, path.c_str());
    REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
    ::close(fd);  // bound, never listened, closed: the file stays
    REQUIRE(exists(path));
}

}  // namespace

TEST_CASE("UnixListener: binds a fresh path, accepts, unlinks on destruction") {
    TempDir dir;
    std::string path = dir.file("v.sock");
    {
        auto l = UnixListener::create(path);
        REQUIRE(l.has_value());
        CHECK_FALSE(l->replaced_stale());
        CHECK(exists(path));
        auto none = l->accept();
        REQUIRE(none.has_value());
        CHECK_FALSE(none->valid());  // nothing pending: not an error
        auto client = connect_unix(path);
        REQUIRE(client.has_value());
        auto server = l->accept();
        REQUIRE(server.has_value());
        CHECK(server->valid());
        CHECK((::fcntl(server->get(), F_GETFL) & O_NONBLOCK) != 0);
        CHECK((::fcntl(client->get(), F_GETFL) & O_NONBLOCK) != 0);
        CHECK(::write(client->get(), "x", 1) == 1);
        char c = 0;
        CHECK(::read(server->get(), &c, 1) == 1);
        CHECK(c == 'x');
    }
    CHECK_FALSE(exists(path));
}

TEST_CASE("UnixListener: a stale socket file is replaced, a live one refused") {
    TempDir dir;
    std::string path = dir.file("v.sock");
    make_stale_socket(path);
    auto l = UnixListener::create(path);
    REQUIRE(l.has_value());
    CHECK(l->replaced_stale());
    CHECK(connect_unix(path).has_value());

    auto second = UnixListener::create(path);
    REQUIRE_FALSE(second.has_value());
    CHECK(second.error().message.find("in use") != std::string::npos);
    // The live listener is untouched.
    CHECK(connect_unix(path).has_value());
}

TEST_CASE("UnixListener: refuses non-sockets and over-long paths") {
    TempDir dir;
    std::string path = dir.file("plain");
    int fd = ::open(path.c_str(), O_CREAT | O_WRONLY, 0600);
    REQUIRE(fd >= 0);
    ::close(fd);
    auto l = UnixListener::create(path);
    REQUIRE_FALSE(l.has_value());
    CHECK(l.error().message.find("not a socket") != std::string::npos);
    CHECK(exists(path));  // never removed

    auto longp = UnixListener::create(dir.file(std::string(120, 'a')));
    REQUIRE_FALSE(longp.has_value());
    CHECK(longp.error().message.find("at most 107") != std::string::npos);
}

TEST_CASE("connect_unix: no listener is an error with the errno") {
    TempDir dir;
    auto r = connect_unix(dir.file("nobody"));
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error().sys_errno == ENOENT);
    std::string stale = dir.file("stale");
    make_stale_socket(stale);
    auto s = connect_unix(stale);
    REQUIRE_FALSE(s.has_value());
    CHECK(s.error().sys_errno == ECONNREFUSED);
}
