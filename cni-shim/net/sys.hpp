// The small system helpers of cni-shim/net: its error type, and UniqueFd from
// vmm/base/fd.hpp (header-only: the library goes into the containerd shim, which links no VMM
// library).
#pragma once

#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <expected>
#include <string>
#include <utility>

#include <fmt/format.h>

#include "vmm/base/fd.hpp"

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

using kestrel::UniqueFd;  // vmm/base/fd.hpp: header-only, no VMM library linked

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
