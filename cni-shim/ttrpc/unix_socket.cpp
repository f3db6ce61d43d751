#include "cni-shim/ttrpc/unix_socket.hpp"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <cerrno>
#include <cstddef>
#include <cstring>
#include <thread>

namespace kestrel::ttrpc {

namespace {

struct UnixAddress {
    sockaddr_un addr{};
    socklen_t len = 0;
    bool abstract = false;
    std::string path;
};

Result<UnixAddress> parse_address(std::string_view address) {
    if (address.starts_with("unix://")) address.remove_prefix(7);
    UnixAddress a;
    a.addr.sun_family = AF_UNIX;
    a.abstract = address.starts_with('@');
    std::string_view name = a.abstract ? address.substr(1) : address;
    // Abstract names start with a NUL byte in sun_path; paths need their terminating NUL.
    if (name.empty() || name.size() + 1 > sizeof(a.addr.sun_path)) {
        return fail("unix socket address '{}' is empty or longer than {} bytes", address,
                    sizeof(a.addr.sun_path) - 1);
    }
    std::memcpy(a.addr.sun_path + (a.abstract ? 1 : 0), name.data(), name.size());
    a.len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + name.size() + 1);
    if (!a.abstract) a.path = std::string(name);
    return a;
}

}  // namespace

Result<UniqueFd> listen_unix(std::string_view address) {
    UnixAddress a = TRY(parse_address(address));
    UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!fd) return fail_errno("socket(AF_UNIX)");
    if (!a.abstract) ::unlink(a.path.c_str());
    if (::bind(fd.get(), reinterpret_cast<const sockaddr*>(&a.addr), a.len) != 0) {
        return fail_errno("bind {}", address);
    }
    if (::listen(fd.get(), 64) != 0) return fail_errno("listen {}", address);
    return fd;
}

Result<UniqueFd> connect_unix(std::string_view address, std::chrono::milliseconds timeout) {
    UnixAddress a = TRY(parse_address(address));
    auto deadline = std::chrono::steady_clock::now() + timeout;
    UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    if (!fd) return fail_errno("socket(AF_UNIX)");
    // A unix connect does not proceed in the background: non-blocking, it fails with EAGAIN
    // while the listener's backlog is full, so wait by retrying until the deadline.
    while (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&a.addr), a.len) != 0) {
        if (errno == EINTR) continue;
        if (errno != EAGAIN || std::chrono::steady_clock::now() >= deadline) {
            return fail_errno("connect {}", address);
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    int flags = ::fcntl(fd.get(), F_GETFL);
    if (flags < 0 || ::fcntl(fd.get(), F_SETFL, flags & ~O_NONBLOCK) != 0) {
        return fail_errno("fcntl {}", address);
    }
    return fd;
}

Result<void> write_all(int fd, std::string_view bytes) {
    while (!bytes.empty()) {
        ssize_t n = ::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR) continue;
            return fail_errno("send");
        }
        bytes.remove_prefix(static_cast<std::size_t>(n));
    }
    return {};
}

}  // namespace kestrel::ttrpc
