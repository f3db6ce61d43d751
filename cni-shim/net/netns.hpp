// Running code inside another network namespace. setns(2) moves only the calling thread, so
// the work runs on a thread of its own that joins the namespace first and ends with the
// work: the caller's threads never change namespace. Sockets and /dev/net/tun fds opened
// there stay bound to that namespace after the thread ends (tun takes the opener's
// namespace at open(2); a socket keeps the namespace it was created in).
#pragma once

#include <sched.h>

#include <optional>
#include <string>
#include <thread>
#include <utility>

#include "cni-shim/net/sys.hpp"

namespace kestrel::cninet {

// An open network namespace file (/proc/PID/ns/net or a bind mount such as
// /var/run/netns/cni-...). Error names the path; `missing` is set when it does not exist.
struct NetnsFile {
    UniqueFd fd;
    std::string path;
};
struct NetnsOpenError {
    std::string message;
    bool missing = false;  // ENOENT: no such file (an already-removed namespace)
};
std::expected<NetnsFile, NetnsOpenError> open_netns(const std::string& path);

// Joins `ns` on the calling thread; only for threads made to do so (see in_netns).
Result<void> join_netns(const NetnsFile& ns);

// Runs fn() (returning Result<T>) on a new thread inside `ns` and returns its result.
template <class F>
auto in_netns(const NetnsFile& ns, F&& fn) -> decltype(fn()) {
    std::optional<decltype(fn())> out;
    std::thread t([&] {
        auto joined = join_netns(ns);
        if (!joined) out.emplace(std::unexpected(std::move(joined).error()));
        else out.emplace(fn());
    });
    t.join();
    return std::move(*out);
}

}  // namespace kestrel::cninet
