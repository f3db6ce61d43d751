// The agent's small system helpers: the error type its syscalls return, a log line, and
// UniqueFd from vmm/base/fd.hpp (header-only: the agent is standalone, statically linked,
// and links no VMM library).
#pragma once

#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <expected>
#include <string>
#include <string_view>
#include <utility>

#include "vmm/base/fd.hpp"

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

using kestrel::UniqueFd;  // vmm/base/fd.hpp: header-only, no VMM library linked

}  // namespace kestrel::agent
