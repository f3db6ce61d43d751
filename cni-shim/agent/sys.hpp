// The agent's small system helpers: an owning fd, the error type its syscalls return, a
// log line. The agent is standalone (statically linked, no VMM library), hence its own.
#pragma once

#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <expected>
#include <string>
#include <string_view>
#include <utility>

namespace kestrel::agent {

template <class T>
using Result = std::expected<T, std::string>;

// `what` + ": " + strerror(errno), as an error.
inline std::unexpected<std::string> sys_error(std::string_view what) {
    return std::unexpected(std::string(what) + ": " + std::strerror(errno));
}
inline std::unexpected<std::string> error(std::string msg) { return std::unexpected(std::move(msg)); }

// One line to stderr (the console in --init mode), prefixed so it stands out in a guest log.
void log(std::string_view line);

class UniqueFd {
public:
    UniqueFd() = default;
    explicit UniqueFd(int fd) : fd_(fd) {}
    UniqueFd(UniqueFd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
    UniqueFd& operator=(UniqueFd&& o) noexcept {
        if (this != &o) reset(std::exchange(o.fd_, -1));
        return *this;
    }
    UniqueFd(const UniqueFd&) = delete;
    UniqueFd& operator=(const UniqueFd&) = delete;
    ~UniqueFd() { reset(); }

    int get() const { return fd_; }
    bool valid() const { return fd_ >= 0; }
    explicit operator bool() const { return valid(); }
    int release() { return std::exchange(fd_, -1); }
    void reset(int fd = -1) {
        if (fd_ >= 0) ::close(fd_);
        fd_ = fd;
    }

private:
    int fd_ = -1;
};

}  // namespace kestrel::agent
