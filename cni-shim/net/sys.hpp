// The small system helpers of cni-shim/net: its error type, an owning fd. The library is
// linked into the containerd shim, which links no VMM library, hence its own (as the
// agent's sys.hpp).
#pragma once

#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <expected>
#include <string>
#include <utility>

#include <fmt/format.h>

namespace kestrel::cninet {

// One sentence naming the interface and the step that failed.
template <class T>
using Result = std::expected<T, std::string>;

template <class... Args>
std::unexpected<std::string> fail(fmt::format_string<Args...> f, Args&&... args) {
    return std::unexpected(fmt::format(f, std::forward<Args>(args)...));
}

// Appends strerror(errno), captured at the call.
template <class... Args>
std::unexpected<std::string> fail_errno(fmt::format_string<Args...> f, Args&&... args) {
    int e = errno;
    return std::unexpected(fmt::format(f, std::forward<Args>(args)...) + ": " + std::strerror(e));
}

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
    explicit operator bool() const { return fd_ >= 0; }
    int release() { return std::exchange(fd_, -1); }
    void reset(int fd = -1) {
        if (fd_ >= 0) ::close(fd_);
        fd_ = fd;
    }

private:
    int fd_ = -1;
};

}  // namespace kestrel::cninet

// TRY(expr) for Result: returns the error from the enclosing function, else yields the value.
#define CNINET_TRY_CAT2(a, b) a##b
#define CNINET_TRY_CAT(a, b) CNINET_TRY_CAT2(a, b)
#define CNINET_TRY_IMPL(expr, r)                          \
    ({                                                    \
        auto&& r = (expr);                                \
        if (!r) [[unlikely]]                              \
            return std::unexpected(std::move(r).error()); \
        std::move(r).value();                             \
    })
#define CNINET_TRY(expr) CNINET_TRY_IMPL(expr, CNINET_TRY_CAT(cninet_try_r_, __COUNTER__))
