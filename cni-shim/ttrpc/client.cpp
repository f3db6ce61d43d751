#include "cni-shim/ttrpc/client.hpp"

#include <poll.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "cni-shim/proto/ttrpc.pb.h"
#include "cni-shim/ttrpc/metadata.hpp"
#include "cni-shim/ttrpc/unix_socket.hpp"

namespace kestrel::ttrpc {

namespace {

using Clock = std::chrono::steady_clock;

int poll_ms(Clock::time_point deadline) {
    auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - Clock::now()).count();
    return static_cast<int>(std::clamp<std::int64_t>(left, 0, 60'000));
}

}  // namespace

Result<Client> Client::connect(std::string_view address, std::chrono::milliseconds timeout) {
    return Client(TRY(connect_unix(address, timeout)));
}

std::expected<std::string, Status> Client::call(std::string_view service, std::string_view method,
                                                std::string_view payload, const CallOptions& opts) {
    if (!fd_) return std::unexpected(Status{Code::Unavailable, "ttrpc: connection closed by an earlier failure"});
    auto deadline = Clock::now() + opts.timeout;
    auto broken = [&](Code code, std::string message) {
        fd_.reset();
        decoder_ = FrameDecoder{};
        inbox_.clear();
        return std::unexpected(Status{code, std::move(message)});
    };

    ::ttrpc::Request req;
    req.set_service(std::string(service));
    req.set_method(std::string(method));
    req.set_payload(std::string(payload));
    req.set_timeout_nano(std::chrono::duration_cast<std::chrono::nanoseconds>(opts.timeout).count());
    if (!opts.ns.empty()) {
        auto* kv = req.add_metadata();
        kv->set_key(std::string(kNamespaceKey));
        kv->set_value(opts.ns);
    }
    std::string data = req.SerializeAsString();
    if (data.size() > kMaxDataLength) {
        return std::unexpected(Status{Code::ResourceExhausted,
                                      fmt::format("ttrpc: request of {} bytes exceeds the {} allowed", data.size(), kMaxDataLength)});
    }
    std::uint32_t stream_id = next_stream_id_;
    next_stream_id_ += 2;

    // A server that stops reading must not hold the call past its deadline.
    auto send_ms = std::max(poll_ms(deadline), 1);
    timeval tv{send_ms / 1000, (send_ms % 1000) * 1000};
    ::setsockopt(fd_.get(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    if (auto w = write_all(fd_.get(), encode_frame(stream_id, MessageType::Request, data)); !w) {
        if (w.error().sys_errno == EAGAIN) return broken(Code::DeadlineExceeded, "ttrpc: timed out sending the request");
        return broken(Code::Unavailable, fmt::format("ttrpc: {}", w.error().what()));
    }

    while (true) {
        if (inbox_.empty()) {
            pollfd p{fd_.get(), POLLIN, 0};
            int n = ::poll(&p, 1, poll_ms(deadline));
            if (n < 0 && errno == EINTR) continue;
            if (n < 0) return broken(Code::Unavailable, fmt::format("ttrpc: poll: {}", std::strerror(errno)));
            if (n == 0) {
                return broken(Code::DeadlineExceeded,
                              fmt::format("ttrpc: no response to {}/{} within {} ms", service, method, opts.timeout.count()));
            }
            inbox_.resize(64 * 1024);
            ssize_t got = ::read(fd_.get(), inbox_.data(), inbox_.size());
            int err = errno;
            inbox_.resize(got > 0 ? static_cast<std::size_t>(got) : 0);
            if (got < 0 && err == EINTR) continue;
            if (got < 0) return broken(Code::Unavailable, fmt::format("ttrpc: read: {}", std::strerror(err)));
            if (got == 0) return broken(Code::Unavailable, "ttrpc: connection closed before the response");
        }
        std::string_view in(inbox_);
        auto r = decoder_.feed(in);
        inbox_.erase(0, inbox_.size() - in.size());
        if (!r) continue;  // refused and skipped by the decoder; not ours to answer
        if (!*r) continue;
        Frame& f = **r;
        if (f.type != MessageType::Response || f.stream_id != stream_id) continue;
        ::ttrpc::Response resp;
        if (!resp.ParseFromString(f.data)) return std::unexpected(Status{Code::Internal, "ttrpc: cannot parse the response"});
        if (resp.has_status() && resp.status().code() != 0) {
            return std::unexpected(Status{static_cast<Code>(resp.status().code()), resp.status().message()});
        }
        return std::move(*resp.mutable_payload());
    }
}

std::expected<std::string, Status> call_once(std::string_view address, std::string_view service,
                                             std::string_view method, std::string_view payload,
                                             const CallOptions& opts) {
    auto start = Clock::now();
    auto client = Client::connect(address, opts.timeout);
    if (!client) return std::unexpected(Status{Code::Unavailable, client.error().what()});
    CallOptions rest = opts;
    rest.timeout = std::max(std::chrono::milliseconds(1),
                            opts.timeout - std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start));
    return client->call(service, method, payload, rest);
}

}  // namespace kestrel::ttrpc
