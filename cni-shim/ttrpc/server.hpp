// A ttrpc server: accepts connections on a listening unix socket and answers unary calls
// by dispatching each request to the handler registered for its (service, method).
//
// Threads: one accepting, one reading per connection, one per call in flight (containerd's
// Task.Wait blocks until the process exits while other calls on the same connection must
// still be answered). Responses to one connection are written whole under its mutex.
#pragma once

#include <chrono>
#include <expected>
#include <functional>
#include <memory>
#include <stop_token>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "cni-shim/ttrpc/metadata.hpp"
#include "cni-shim/ttrpc/status.hpp"
#include "vmm/base/error.hpp"
#include "vmm/base/fd.hpp"

namespace kestrel::ttrpc {

struct CallContext {
    std::string service;
    std::string method;
    std::string ns;  // value of kNamespaceKey, empty when absent
    // The caller's timeout (Request.timeout_nano), zero when it set none. The server does
    // not enforce it; a handler that may run long should watch deadline or stop.
    std::chrono::nanoseconds timeout{0};
    std::chrono::steady_clock::time_point deadline = std::chrono::steady_clock::time_point::max();
    std::vector<std::pair<std::string, std::string>> metadata;  // all of it, in order
    // Requested when the connection closes or the server stops: a blocking handler should
    // give up then (its answer, if any, is still sent while the connection is open).
    std::stop_token stop;
};

// Returns the serialized response message, or the status the call fails with.
using Handler = std::function<std::expected<std::string, Status>(const CallContext&, std::string_view payload)>;

class Server {
public:
    // Takes a listening socket (the shim is handed one already bound, or see listen_unix).
    explicit Server(UniqueFd listener);
    Server(Server&&) noexcept;
    Server& operator=(Server&&) = delete;  // would have to shut the old one down first
    ~Server();  // shutdown()

    // Before start(). A later registration of the same pair replaces the earlier one.
    void register_method(std::string service, std::string method, Handler handler);

    // Starts accepting. Fails if already started or the wake-up eventfd cannot be made.
    Result<void> start();

    // Asks everything to stop and returns at once: stops accepting and reading, requests
    // stop on every call's stop token. Safe from a handler (e.g. the shim's Shutdown).
    void stop();

    // stop(), then waits for every thread: calls in flight finish and are answered, then
    // connections close. Not from a handler (it would wait for itself).
    void shutdown();

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace kestrel::ttrpc
