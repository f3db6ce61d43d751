// Error type and the TRY helper every layer returns through (std::expected, C++23).
#pragma once

#include <cerrno>
#include <cstring>
#include <expected>
#include <string>
#include <utility>

#include <fmt/format.h>

namespace kestrel {

// What kind of failure, so a control plane can answer it (an HTTP status, a CLI exit code):
// the request itself was wrong, it is not allowed in the VM's current state, or the host
// failed to do something valid.
enum class ErrorKind { Host, BadRequest, NotAllowed };

// One error: a sentence for the user plus the errno it came from (0 when none).
struct Error {
    std::string message;
    int sys_errno = 0;
    ErrorKind kind = ErrorKind::Host;

    std::string what() const {
        if (sys_errno == 0) return message;
        return fmt::format("{}: {}", message, std::strerror(sys_errno));
    }
};

template <class T>
using Result = std::expected<T, Error>;

template <class... Args>
std::unexpected<Error> fail(fmt::format_string<Args...> f, Args&&... args) {
    return std::unexpected(Error{fmt::format(f, std::forward<Args>(args)...), 0});
}

// Captures errno at the call site.
template <class... Args>
std::unexpected<Error> fail_errno(fmt::format_string<Args...> f, Args&&... args) {
    int e = errno;
    return std::unexpected(Error{fmt::format(f, std::forward<Args>(args)...), e});
}

template <class... Args>
std::unexpected<Error> bad_request(fmt::format_string<Args...> f, Args&&... args) {
    return std::unexpected(Error{fmt::format(f, std::forward<Args>(args)...), 0, ErrorKind::BadRequest});
}

template <class... Args>
std::unexpected<Error> not_allowed(fmt::format_string<Args...> f, Args&&... args) {
    return std::unexpected(Error{fmt::format(f, std::forward<Args>(args)...), 0, ErrorKind::NotAllowed});
}

// Prefixes context onto an error coming up from below.
inline Error context(Error e, std::string_view what) {
    e.message = fmt::format("{}: {}", what, e.message);
    return e;
}

}  // namespace kestrel

// TRY(expr): evaluates a Result; returns its error from the enclosing function,
// otherwise yields the value (GNU statement expression, supported by g++ and clang).
// The temporary's name is unique per expansion so nested TRYs do not shadow each other.
#define KESTREL_TRY_CAT2(a, b) a##b
#define KESTREL_TRY_CAT(a, b) KESTREL_TRY_CAT2(a, b)
#define KESTREL_TRY_IMPL(expr, r)                                 \
    ({                                                            \
        auto&& r = (expr);                                        \
        if (!r) [[unlikely]]                                      \
            return std::unexpected(std::move(r).error());         \
        std::move(r).value();                                     \
    })
#define KESTREL_TRY(expr) KESTREL_TRY_IMPL(expr, KESTREL_TRY_CAT(kestrel_try_r_, __COUNTER__))
#define TRY(expr) KESTREL_TRY(expr)
