#include "cni-shim/ttrpc/server.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <exception>
#include <list>
#include <map>
#include <mutex>
#include <thread>

#include "cni-shim/proto/ttrpc.pb.h"
#include "cni-shim/ttrpc/frame.hpp"
#include "cni-shim/ttrpc/unix_socket.hpp"
#include "vmm/base/log.hpp"

namespace kestrel::ttrpc {

namespace {

// Calls in flight on one connection, each a thread. containerd has a handful at a time (one
// Wait per process plus short calls); a peer sending more is refused rather than allowed to
// make threads without bound.
constexpr std::size_t kMaxCallsPerConnection = 256;

// A peer that stops reading would block a response write, and with it shutdown, forever.
constexpr auto kSendTimeout = std::chrono::seconds(10);

std::string response_frame(std::uint32_t stream_id, const std::expected<std::string, Status>& result) {
    ::ttrpc::Response resp;
    if (result) {
        resp.set_payload(*result);
    } else {
        resp.mutable_status()->set_code(static_cast<std::int32_t>(result.error().code));
        resp.mutable_status()->set_message(result.error().message);
    }
    std::string data = resp.SerializeAsString();
    if (data.size() > kMaxDataLength) {
        ::ttrpc::Response too_big;
        too_big.mutable_status()->set_code(static_cast<std::int32_t>(Code::ResourceExhausted));
        too_big.mutable_status()->set_message(
            fmt::format("ttrpc: response of {} bytes exceeds the {} allowed", data.size(), kMaxDataLength));
        data = too_big.SerializeAsString();
    }
    return encode_frame(stream_id, MessageType::Response, data);
}

// Waits until fd is readable or the server's wake-up eventfd fires. False: stop.
bool wait_readable(int fd, int wake) {
    pollfd p[2] = {{fd, POLLIN, 0}, {wake, POLLIN, 0}};
    while (true) {
        int n = ::poll(p, 2, -1);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
            log::warn("ttrpc: poll: {}", std::strerror(errno));
            return false;
        }
        if (p[1].revents != 0) return false;
        return true;  // readable, hung up or failed: the read that follows tells
    }
}

struct Call {
    std::jthread thread;
    std::atomic<bool> done{false};
};

struct Connection {
    UniqueFd fd;
    std::mutex write_mu;
    std::stop_source stop;  // per connection: requested on close or server stop
    std::list<Call> calls;  // only the reader thread touches the list
    std::atomic<bool> done{false};
    std::jthread reader;

    void send(std::string_view frame) {
        std::lock_guard lock(write_mu);
        if (auto r = write_all(fd.get(), frame); !r) log::debug("ttrpc: response not sent: {}", r.error().what());
    }
    void reap_calls() {
        calls.remove_if([](Call& c) { return c.done.load(); });
    }
};

}  // namespace

struct Server::Impl {
    UniqueFd listener;
    UniqueFd wake;
    std::map<std::pair<std::string, std::string>, Handler> handlers;
    std::stop_source stop;
    std::jthread acceptor;
    std::list<std::unique_ptr<Connection>> connections;  // only the acceptor touches the list
    bool started = false;

    void accept_loop();
    void read_loop(Connection& c);
    void dispatch(Connection& c, Frame frame);
};

void Server::Impl::accept_loop() {
    while (wait_readable(listener.get(), wake.get())) {
        UniqueFd fd(::accept4(listener.get(), nullptr, nullptr, SOCK_CLOEXEC));
        if (!fd) {
            if (errno == EAGAIN || errno == EINTR || errno == ECONNABORTED) continue;
            log::warn("ttrpc: accept: {}", std::strerror(errno));
            // Out of fds or memory: retry later instead of spinning on a ready listener.
            std::this_thread::sleep_for(std::chrono::milliseconds(100));
            continue;
        }
        timeval tv{static_cast<time_t>(kSendTimeout.count()), 0};
        ::setsockopt(fd.get(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
        connections.remove_if([](const std::unique_ptr<Connection>& c) { return c->done.load(); });
        auto conn = std::make_unique<Connection>();
        conn->fd = std::move(fd);
        Connection& c = *conn;
        connections.push_back(std::move(conn));
        c.reader = std::jthread([this, &c] { read_loop(c); });
    }
    // Each reader ends on the wake-up too, after answering its calls in flight.
    connections.clear();
}

void Server::Impl::read_loop(Connection& c) {
    std::stop_callback on_server_stop(stop.get_token(), [&c] { c.stop.request_stop(); });
    FrameDecoder decoder;
    std::string buf(64 * 1024, '\0');
    while (wait_readable(c.fd.get(), wake.get())) {
        ssize_t n = ::read(c.fd.get(), buf.data(), buf.size());
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            if (n < 0) log::debug("ttrpc: read: {}", std::strerror(errno));
            if (!decoder.at_boundary()) log::warn("ttrpc: connection closed inside a frame");
            break;
        }
        std::string_view input(buf.data(), static_cast<std::size_t>(n));
        while (!input.empty()) {
            auto r = decoder.feed(input);
            if (!r) {
                // As ttrpc does: an oversized request is answered on its stream, other
                // message types (responses, stream data) are ignored.
                log::warn("ttrpc: {}", r.error().what());
                if (r.error().kind == FrameError::TooLong) {
                    c.send(response_frame(r.error().header.stream_id,
                                          std::unexpected(Status{Code::ResourceExhausted, r.error().what()})));
                }
                continue;
            }
            if (*r) dispatch(c, std::move(**r));
        }
    }
    c.stop.request_stop();
    c.calls.clear();  // joins: every call in flight is answered before the fd closes
    c.done = true;
}

void Server::Impl::dispatch(Connection& c, Frame frame) {
    if (frame.type != MessageType::Request) {
        log::debug("ttrpc: ignoring a response on stream {}", frame.stream_id);
        return;
    }
    auto refuse = [&](Code code, std::string message) {
        c.send(response_frame(frame.stream_id, std::unexpected(Status{code, std::move(message)})));
    };
    if (frame.stream_id % 2 != 1) return refuse(Code::InvalidArgument, "ttrpc: stream id must be odd for client-initiated streams");
    ::ttrpc::Request req;
    if (!req.ParseFromString(frame.data)) return refuse(Code::InvalidArgument, "ttrpc: cannot parse the request");
    auto it = handlers.find({req.service(), req.method()});
    if (it == handlers.end()) {
        return refuse(Code::Unimplemented, fmt::format("ttrpc: no method {}/{}", req.service(), req.method()));
    }
    c.reap_calls();
    if (c.calls.size() >= kMaxCallsPerConnection) {
        return refuse(Code::ResourceExhausted,
                      fmt::format("ttrpc: more than {} calls in flight", kMaxCallsPerConnection));
    }

    CallContext ctx;
    ctx.service = req.service();
    ctx.method = req.method();
    if (req.timeout_nano() > 0) {
        ctx.timeout = std::chrono::nanoseconds(req.timeout_nano());
        ctx.deadline = std::chrono::steady_clock::now() + ctx.timeout;
    }
    for (const auto& kv : req.metadata()) {
        if (kv.key() == kNamespaceKey) ctx.ns = kv.value();
        ctx.metadata.emplace_back(kv.key(), kv.value());
    }
    ctx.stop = c.stop.get_token();

    Call& call = c.calls.emplace_back();
    call.thread = std::jthread([&c, &call, &handler = it->second, ctx = std::move(ctx),
                                payload = std::move(*req.mutable_payload()), stream_id = frame.stream_id] {
        std::expected<std::string, Status> result;
        try {
            result = handler(ctx, payload);
        } catch (const std::exception& e) {
            result = std::unexpected(Status{Code::Internal, fmt::format("ttrpc: handler threw: {}", e.what())});
        }
        c.send(response_frame(stream_id, result));
        call.done = true;
    });
}

Server::Server(UniqueFd listener) : impl_(std::make_unique<Impl>()) {
    impl_->listener = std::move(listener);
}

Server::Server(Server&&) noexcept = default;

Server::~Server() {
    if (impl_) shutdown();
}

void Server::register_method(std::string service, std::string method, Handler handler) {
    impl_->handlers[{std::move(service), std::move(method)}] = std::move(handler);
}

Result<void> Server::start() {
    if (impl_->started) return fail("ttrpc server already started");
    impl_->wake = UniqueFd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    if (!impl_->wake) return fail_errno("eventfd");
    // accept() after poll() must not block if the client went away in between.
    int flags = ::fcntl(impl_->listener.get(), F_GETFL);
    if (flags < 0 || ::fcntl(impl_->listener.get(), F_SETFL, flags | O_NONBLOCK) != 0) {
        return fail_errno("fcntl(listener, O_NONBLOCK)");
    }
    impl_->started = true;
    impl_->acceptor = std::jthread([impl = impl_.get()] { impl->accept_loop(); });
    return {};
}

void Server::stop() {
    if (!impl_->started) return;
    impl_->stop.request_stop();
    std::uint64_t one = 1;
    // The eventfd stays readable once written: it wakes every poll, now and later.
    [[maybe_unused]] ssize_t n = ::write(impl_->wake.get(), &one, sizeof one);
}

void Server::shutdown() {
    stop();
    if (impl_->acceptor.joinable()) impl_->acceptor.join();
}

}  // namespace kestrel::ttrpc
