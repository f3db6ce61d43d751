#include "cni-shim/ttrpc/server.hpp"

#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include <filesystem>
#include <future>
#include <mutex>

#include <doctest/doctest.h>

#include "cni-shim/proto/events_service.pb.h"
#include "cni-shim/proto/events_task.pb.h"
#include "cni-shim/proto/ttrpc.pb.h"
#include "cni-shim/proto/typeurl.hpp"
#include "cni-shim/ttrpc/client.hpp"
#include "cni-shim/ttrpc/frame.hpp"
#include "cni-shim/ttrpc/unix_socket.hpp"

namespace kestrel::ttrpc {
namespace {

using namespace std::chrono_literals;

// A server on a fresh socket in a temporary directory, with an Echo method and whatever a
// test adds before start().
struct Fixture {
    std::filesystem::path dir;
    std::string address;
    std::unique_ptr<Server> server;

    Fixture() {
        char tmpl[] = "/tmp/kestrel-ttrpc-XXXXXX";
        REQUIRE(::mkdtemp(tmpl) != nullptr);
        dir = tmpl;
        address = (dir / "s.sock").string();
        auto listener = listen_unix(address);
        REQUIRE(listener.has_value());
        server = std::make_unique<Server>(std::move(*listener));
        server->register_method("test.Svc", "Echo", [](const CallContext&, std::string_view p) {
            return std::expected<std::string, Status>(std::string(p));
        });
    }
    ~Fixture() {
        server.reset();
        std::filesystem::remove_all(dir);
    }
    void start() { REQUIRE(server->start().has_value()); }
};

// The client side by hand: frames written and read raw, to check the wire itself.
struct RawPeer {
    UniqueFd fd;
    FrameDecoder decoder;
    std::string inbox;

    explicit RawPeer(const std::string& address) {
        auto c = connect_unix(address, 1s);
        REQUIRE(c.has_value());
        fd = std::move(*c);
    }
    void send_request(std::uint32_t stream, const std::string& service, const std::string& method,
                      const std::string& payload) {
        ::ttrpc::Request req;
        req.set_service(service);
        req.set_method(method);
        req.set_payload(payload);
        send_raw(encode_frame(stream, MessageType::Request, req.SerializeAsString()));
    }
    void send_raw(std::string_view bytes) { REQUIRE(write_all(fd.get(), bytes).has_value()); }
    Frame next_frame() {
        while (true) {
            std::string_view in(inbox);
            auto r = decoder.feed(in);
            inbox.erase(0, inbox.size() - in.size());
            REQUIRE(r.has_value());
            if (*r) return std::move(**r);
            char buf[4096];
            ssize_t n = ::read(fd.get(), buf, sizeof buf);
            REQUIRE(n > 0);
            inbox.append(buf, static_cast<std::size_t>(n));
        }
    }
    ::ttrpc::Response next_response(std::uint32_t expect_stream) {
        Frame f = next_frame();
        CHECK(f.type == MessageType::Response);
        CHECK(f.stream_id == expect_stream);
        ::ttrpc::Response resp;
        REQUIRE(resp.ParseFromString(f.data));
        return resp;
    }
};

TEST_CASE("server: answers a registered method on the request's stream") {
    Fixture fx;
    fx.start();
    RawPeer peer(fx.address);
    peer.send_request(1, "test.Svc", "Echo", std::string("pay\0load", 8));
    auto resp = peer.next_response(1);
    CHECK_FALSE(resp.has_status());
    CHECK(resp.payload() == std::string("pay\0load", 8));
    // The connection stays up for the next call.
    peer.send_request(3, "test.Svc", "Echo", "again");
    CHECK(peer.next_response(3).payload() == "again");
}

TEST_CASE("server: an unknown service or method is UNIMPLEMENTED (12)") {
    Fixture fx;
    fx.start();
    RawPeer peer(fx.address);
    peer.send_request(1, "test.Svc", "Nope", "");
    auto r1 = peer.next_response(1);
    REQUIRE(r1.has_status());
    CHECK(r1.status().code() == 12);
    CHECK(r1.status().message().find("Nope") != std::string::npos);
    peer.send_request(3, "other.Svc", "Echo", "");
    CHECK(peer.next_response(3).status().code() == 12);
}

TEST_CASE("server: a handler's error travels as its code and message") {
    Fixture fx;
    fx.server->register_method("test.Svc", "Fail", [](const CallContext&, std::string_view) {
        return std::expected<std::string, Status>(std::unexpected(Status{Code::NotFound, "no such task"}));
    });
    fx.start();
    RawPeer peer(fx.address);
    peer.send_request(5, "test.Svc", "Fail", "");
    auto resp = peer.next_response(5);
    REQUIRE(resp.has_status());
    CHECK(resp.status().code() == 5);
    CHECK(resp.status().message() == "no such task");
}

TEST_CASE("server: protocol errors are answered and the connection goes on") {
    Fixture fx;
    fx.start();
    RawPeer peer(fx.address);
    // An even (server-initiated) stream id.
    peer.send_request(2, "test.Svc", "Echo", "x");
    CHECK(peer.next_response(2).status().code() == static_cast<int>(Code::InvalidArgument));
    // Data that is no Request (field 1 announced as 100 bytes long, 1 there).
    peer.send_raw(encode_frame(7, MessageType::Request, std::string("\x0a\x64x", 3)));
    CHECK(peer.next_response(7).status().code() == static_cast<int>(Code::InvalidArgument));
    // An oversized frame: answered on its stream, its data skipped.
    auto h = encode_header(FrameHeader{kMaxDataLength + 1, 9, 1, 0});
    peer.send_raw(std::string_view(reinterpret_cast<const char*>(h.data()), h.size()));
    peer.send_raw(std::string(kMaxDataLength + 1, '\0'));
    CHECK(peer.next_response(9).status().code() == static_cast<int>(Code::ResourceExhausted));
    // A response frame from the client is ignored; the next request is served.
    peer.send_raw(encode_frame(11, MessageType::Response, ""));
    peer.send_request(13, "test.Svc", "Echo", "still here");
    CHECK(peer.next_response(13).payload() == "still here");
}

TEST_CASE("server: a blocking handler does not hold up a second call on the connection") {
    Fixture fx;
    std::promise<void> release;
    std::shared_future<void> released = release.get_future().share();
    fx.server->register_method("test.Svc", "Wait", [released](const CallContext&, std::string_view) {
        released.wait();
        return std::expected<std::string, Status>("exited");
    });
    fx.start();
    RawPeer peer(fx.address);
    peer.send_request(1, "test.Svc", "Wait", "");
    peer.send_request(3, "test.Svc", "Echo", "meanwhile");
    auto first = peer.next_response(3);
    CHECK(first.payload() == "meanwhile");
    release.set_value();
    CHECK(peer.next_response(1).payload() == "exited");
}

TEST_CASE("client <-> server: payload, namespace, timeout and errors") {
    Fixture fx;
    std::mutex mu;
    CallContext seen;
    fx.server->register_method("test.Svc", "Look", [&](const CallContext& ctx, std::string_view p) {
        std::lock_guard lock(mu);
        seen = ctx;
        return std::expected<std::string, Status>("saw " + std::string(p));
    });
    fx.server->register_method("test.Svc", "Fail", [](const CallContext&, std::string_view) {
        return std::expected<std::string, Status>(std::unexpected(Status{Code::FailedPrecondition, "not running"}));
    });
    fx.start();

    auto client = Client::connect(fx.address, 1s);
    REQUIRE(client.has_value());
    auto r = client->call("test.Svc", "Look", "it", CallOptions{"k8s.io", 5s});
    REQUIRE(r.has_value());
    CHECK(*r == "saw it");
    {
        std::lock_guard lock(mu);
        CHECK(seen.ns == "k8s.io");
        CHECK(seen.service == "test.Svc");
        CHECK(seen.method == "Look");
        CHECK(seen.timeout == 5s);
        REQUIRE(seen.metadata.size() == 1);
        CHECK(seen.metadata[0].first == "containerd-namespace-ttrpc");
    }
    auto f = client->call("test.Svc", "Fail", "");
    REQUIRE_FALSE(f.has_value());
    CHECK(f.error().code == Code::FailedPrecondition);
    CHECK(f.error().message == "not running");
    auto u = client->call("test.Svc", "Missing", "");
    REQUIRE_FALSE(u.has_value());
    CHECK(u.error().code == Code::Unimplemented);
    // Same connection, still good after errors answered by the server.
    CHECK(client->call("test.Svc", "Echo", "ok").value_or("") == "ok");

    auto once = call_once("unix://" + fx.address, "test.Svc", "Echo", "once", CallOptions{"", 2s});
    CHECK(once.value_or("") == "once");
}

TEST_CASE("client: a call that outlives its timeout is DeadlineExceeded; the handler sees stop") {
    Fixture fx;
    std::promise<bool> handler_saw_stop;
    fx.server->register_method("test.Svc", "Hang", [&](const CallContext& ctx, std::string_view) {
        // Blocks until the connection closes (the client gives up) or the server stops.
        std::mutex m;
        std::condition_variable_any cv;
        std::unique_lock lock(m);
        bool stopped = cv.wait_for(lock, ctx.stop, 10s, [] { return false; }) == false && ctx.stop.stop_requested();
        handler_saw_stop.set_value(stopped);
        return std::expected<std::string, Status>(std::unexpected(Status{Code::Cancelled, "gave up"}));
    });
    fx.start();
    auto client = Client::connect(fx.address, 1s);
    REQUIRE(client.has_value());
    auto start = std::chrono::steady_clock::now();
    auto r = client->call("test.Svc", "Hang", "", CallOptions{"", 200ms});
    auto took = std::chrono::steady_clock::now() - start;
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error().code == Code::DeadlineExceeded);
    CHECK(took >= 200ms);
    CHECK(took < 5s);
    // The timed-out client closed its connection, which stops the handler's call.
    auto fut = handler_saw_stop.get_future();
    REQUIRE(fut.wait_for(5s) == std::future_status::ready);
    CHECK(fut.get());
    // After a timeout the client refuses further calls rather than read a stale answer.
    CHECK(client->call("test.Svc", "Echo", "").error().code == Code::Unavailable);
}

TEST_CASE("client: nothing listening is Unavailable") {
    auto r = call_once("/tmp/kestrel-ttrpc-no-such-dir/x.sock", "a", "b", "", CallOptions{"", 200ms});
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error().code == Code::Unavailable);
}

TEST_CASE("server: shutdown stops a blocked handler, answers it, and joins") {
    Fixture fx;
    fx.server->register_method("test.Svc", "Block", [](const CallContext& ctx, std::string_view) {
        std::mutex m;
        std::condition_variable_any cv;
        std::unique_lock lock(m);
        cv.wait(lock, ctx.stop, [] { return false; });
        return std::expected<std::string, Status>(std::unexpected(Status{Code::Cancelled, "shutting down"}));
    });
    fx.start();
    RawPeer peer(fx.address);
    peer.send_request(1, "test.Svc", "Block", "");
    peer.send_request(3, "test.Svc", "Echo", "up");
    CHECK(peer.next_response(3).payload() == "up");  // so Block is surely in flight
    fx.server->shutdown();
    auto resp = peer.next_response(1);
    CHECK(resp.status().code() == static_cast<int>(Code::Cancelled));
    char c;
    CHECK(::read(peer.fd.get(), &c, 1) == 0);  // then the connection is closed
}

TEST_CASE("generated messages: an Events.Forward envelope with a TaskExit round trip") {
    Fixture fx;
    std::promise<std::string> topic;
    fx.server->register_method("containerd.services.events.ttrpc.v1.Events", "Forward",
                               [&](const CallContext& ctx, std::string_view p) {
        containerd::services::events::ttrpc::v1::ForwardRequest req;
        if (!req.ParseFromArray(p.data(), static_cast<int>(p.size()))) {
            return std::expected<std::string, Status>(std::unexpected(Status{Code::InvalidArgument, "bad"}));
        }
        containerd::events::TaskExit exit;
        if (!shim_proto::unpack_containerd_any(req.envelope().event(), &exit)) {
            return std::expected<std::string, Status>(std::unexpected(Status{Code::InvalidArgument, "not TaskExit"}));
        }
        topic.set_value(ctx.ns + " " + req.envelope().topic() + " " + exit.id() + " " + std::to_string(exit.exit_status()));
        return std::expected<std::string, Status>(google::protobuf::Empty().SerializeAsString());
    });
    fx.start();

    containerd::events::TaskExit exit;
    exit.set_container_id("c1");
    exit.set_id("c1");
    exit.set_pid(42);
    exit.set_exit_status(137);
    containerd::services::events::ttrpc::v1::ForwardRequest req;
    req.mutable_envelope()->set_namespace_("default");
    req.mutable_envelope()->set_topic("/tasks/exit");
    shim_proto::pack_containerd_any(exit, req.mutable_envelope()->mutable_event());
    auto r = call_once(fx.address, "containerd.services.events.ttrpc.v1.Events", "Forward",
                       req.SerializeAsString(), CallOptions{"default", 2s});
    REQUIRE(r.has_value());
    CHECK(r->empty());
    CHECK(topic.get_future().get() == "default /tasks/exit c1 137");
    // containerd 1.6 resolves the Any by exactly this type URL (typeurl.hpp).
    CHECK(req.envelope().event().type_url() == "containerd.events.TaskExit");
}

}  // namespace
}  // namespace kestrel::ttrpc
