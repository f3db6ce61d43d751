// A blocking ttrpc client: unary calls over one unix socket connection, one at a time.
// The shim uses it to publish task events to containerd (TTRPC_ADDRESS,
// containerd.services.events.ttrpc.v1.Events/Forward).
#pragma once

#include <chrono>
#include <cstdint>
#include <expected>
#include <string>
#include <string_view>

#include "cni-shim/ttrpc/frame.hpp"
#include "cni-shim/ttrpc/status.hpp"
#include "vmm/base/error.hpp"
#include "vmm/base/fd.hpp"

namespace kestrel::ttrpc {

struct CallOptions {
    std::string ns;  // sent as metadata kNamespaceKey when not empty
    std::chrono::milliseconds timeout{std::chrono::seconds(10)};  // also sent as timeout_nano
};

class Client {
public:
    // Address forms as connect_unix. The connection attempt is bounded by `timeout`.
    static Result<Client> connect(std::string_view address, std::chrono::milliseconds timeout);

    // One call: sends the request and waits for its response until opts.timeout. Transport
    // failures come back as Unavailable, an expired timeout as DeadlineExceeded; after
    // either the connection is closed and later calls fail (make a new Client).
    std::expected<std::string, Status> call(std::string_view service, std::string_view method,
                                            std::string_view payload, const CallOptions& opts = {});

private:
    explicit Client(UniqueFd fd) : fd_(std::move(fd)) {}
    UniqueFd fd_;
    std::uint32_t next_stream_id_ = 1;  // odd: client-initiated
    FrameDecoder decoder_;
    std::string inbox_;  // read from the socket, not yet fed to decoder_
};

// Connects, makes one call, closes. opts.timeout bounds the whole of it.
std::expected<std::string, Status> call_once(std::string_view address, std::string_view service,
                                             std::string_view method, std::string_view payload,
                                             const CallOptions& opts = {});

}  // namespace kestrel::ttrpc
