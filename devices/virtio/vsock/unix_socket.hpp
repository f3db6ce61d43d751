// Host-side unix stream sockets for virtio-vsock: the listener host programs connect to
// (with its stale-socket policy) and the non-blocking client connect used for
// guest-initiated connections. All sockets are SOCK_NONBLOCK | SOCK_CLOEXEC.
#pragma once

#include <sys/types.h>

#include <string>
#include <string_view>

#include "vmm/base/error.hpp"
#include "vmm/base/fd.hpp"

namespace kestrel {

// sizeof(sockaddr_un::sun_path) - 1 for the terminating NUL.
inline constexpr size_t kMaxUnixPathBytes = 107;

class UnixListener {
public:
    // Binds and listens on `path`. If something already exists there:
    //  - a socket somebody accepts connections on: refused ("in use"), never touched;
    //  - a socket nobody listens on (connect gives ECONNREFUSED): a stale leftover of an
    //    earlier run, unlinked and replaced (replaced_stale() tells);
    //  - anything else (regular file, directory, ...): refused.
    static Result<UnixListener> create(const std::string& path, int backlog = 64);
    UnixListener(UnixListener&&) noexcept;
    UnixListener& operator=(UnixListener&&) = delete;
    // Unlinks the path if it is still the socket this listener created.
    ~UnixListener();

    int fd() const { return fd_.get(); }
    const std::string& path() const { return path_; }
    bool replaced_stale() const { return replaced_stale_; }

    // accept4(NONBLOCK|CLOEXEC); an invalid fd when nothing is pending (EAGAIN).
    Result<UniqueFd> accept() const;

private:
    UnixListener(UniqueFd fd, std::string path, dev_t dev, ino_t ino, bool replaced);
    UniqueFd fd_;
    std::string path_;
    dev_t dev_ = 0;
    ino_t ino_ = 0;
    bool replaced_stale_ = false;
};

// Connects a non-blocking stream socket to `path`. A unix-socket connect completes (or
// fails) at once; EAGAIN means the listener's backlog is full and is reported as an error.
Result<UniqueFd> connect_unix(std::string_view path);

}  // namespace kestrel
