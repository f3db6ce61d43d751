#include "devices/virtio/vsock/unix_socket.hpp"

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "vmm/base/log.hpp"

namespace kestrel {

namespace {

static_assert(sizeof(sockaddr_un::sun_path) == kMaxUnixPathBytes + 1);

Result<sockaddr_un> make_address(std::string_view path) {
    if (path.empty()) return fail("unix socket path is empty");
    if (path.size() > kMaxUnixPathBytes)
        return fail("unix socket path '{}' is {} bytes, at most {} fit in sockaddr_un", path,
                    path.size(), kMaxUnixPathBytes);
    if (path.find('\0') != std::string_view::npos)
        return fail("unix socket path contains a NUL byte");
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::memcpy(a.sun_path, path.data(), path.size());
    return a;
}

Result<UniqueFd> stream_socket() {
    int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return fail_errno("socket(AF_UNIX)");
    return UniqueFd(fd);
}

Result<void> connect_to(int fd, const sockaddr_un& a) {
    while (::connect(fd, reinterpret_cast<const sockaddr*>(&a), sizeof a) < 0) {
        if (errno == EINTR) continue;
        return fail_errno("connect to '{}'", a.sun_path);
    }
    return {};
}

// What is at `path` now, and whether it may be replaced.
Result<bool> check_existing(const std::string& path, const sockaddr_un& addr) {
    struct stat st{};
    if (::lstat(path.c_str(), &st) < 0) {
        if (errno == ENOENT) return false;
        return fail_errno("vsock socket '{}': cannot stat", path);
    }
    if (!S_ISSOCK(st.st_mode))
        return fail("vsock socket '{}' exists and is not a socket; refusing to replace it", path);
    // Probe it: a live listener accepts (or has a full backlog: EAGAIN), a stale file refuses.
    auto probe = TRY(stream_socket());
    auto r = connect_to(probe.get(), addr);
    if (r) return fail("vsock socket '{}' is in use: another process is listening on it", path);
    if (r.error().sys_errno == EAGAIN)
        return fail("vsock socket '{}' is in use: its listener's backlog is full", path);
    if (r.error().sys_errno != ECONNREFUSED)
        return std::unexpected(context(r.error(), fmt::format("vsock socket '{}'", path)));
    return true;
}

}  // namespace

UnixListener::UnixListener(UniqueFd fd, std::string path, dev_t dev, ino_t ino, bool replaced)
    : fd_(std::move(fd)), path_(std::move(path)), dev_(dev), ino_(ino), replaced_stale_(replaced) {}

UnixListener::UnixListener(UnixListener&& o) noexcept
    : fd_(std::move(o.fd_)),
      path_(std::move(o.path_)),
      dev_(o.dev_),
      ino_(o.ino_),
      replaced_stale_(o.replaced_stale_) {
    o.path_.clear();
}

UnixListener::~UnixListener() {
    if (path_.empty() || !fd_) return;
    // Only remove our own socket: someone may have replaced it since.
    struct stat st{};
    if (::lstat(path_.c_str(), &st) == 0 && st.st_dev == dev_ && st.st_ino == ino_)
        ::unlink(path_.c_str());
}

Result<UnixListener> UnixListener::create(const std::string& path, int backlog) {
    auto addr = TRY(make_address(path));
    bool stale = TRY(check_existing(path, addr));
    if (stale) {
        if (::unlink(path.c_str()) < 0 && errno != ENOENT)
            return fail_errno("vsock socket '{}': cannot remove the stale socket", path);
        log::info("vsock: replacing stale socket '{}' (nobody was listening on it)", path);
    }
    auto fd = TRY(stream_socket());
    if (::bind(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr) < 0)
        return fail_errno("vsock socket '{}': bind", path);
    struct stat st{};
    if (::lstat(path.c_str(), &st) < 0) return fail_errno("vsock socket '{}': stat", path);
    UnixListener l(std::move(fd), path, st.st_dev, st.st_ino, stale);
    if (::listen(l.fd(), backlog) < 0) return fail_errno("vsock socket '{}': listen", path);
    return l;
}

Result<UniqueFd> UnixListener::accept() const {
    for (;;) {
        int fd = ::accept4(fd_.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd >= 0) return UniqueFd(fd);
        if (errno == EINTR) continue;
        // The client gave up between readiness and accept: nothing pending any more.
        if (errno == EAGAIN || errno == ECONNABORTED) return UniqueFd();
        return fail_errno("vsock socket '{}': accept", path_);
    }
}

Result<UniqueFd> connect_unix(std::string_view path) {
    auto addr = TRY(make_address(path));
    auto fd = TRY(stream_socket());
    TRY(connect_to(fd.get(), addr));
    return fd;
}

}  // namespace kestrel
