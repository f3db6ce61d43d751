// Unix stream sockets for ttrpc: listening, connecting (containerd's addresses), and writing
// whole buffers. Each returns an owned fd; nothing here knows about frames.
#pragma once

#include <chrono>
#include <string>
#include <string_view>

#include "vmm/base/error.hpp"
#include "vmm/base/fd.hpp"

namespace kestrel::ttrpc {

// A listening SOCK_STREAM socket bound to `address` (see connect_unix for the forms).
// A stale socket file at a path address is removed first.
Result<UniqueFd> listen_unix(std::string_view address);

// Connects to a unix socket: "/path", "unix:///path", or "@name" / "unix://@name" (Linux
// abstract namespace, which containerd uses for shim sockets). Gives up after `timeout`.
Result<UniqueFd> connect_unix(std::string_view address, std::chrono::milliseconds timeout);

// Writes all of `bytes` (MSG_NOSIGNAL: a gone peer is an error, not SIGPIPE).
Result<void> write_all(int fd, std::string_view bytes);

}  // namespace kestrel::ttrpc
