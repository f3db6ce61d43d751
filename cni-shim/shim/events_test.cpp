#include "cni-shim/shim/events.hpp"

#include <unistd.h>

#include <condition_variable>
#include <filesystem>
#include <mutex>

#include <doctest/doctest.h>

#include "cni-shim/proto/events_service.pb.h"
#include "cni-shim/proto/events_task.pb.h"
#include "cni-shim/proto/typeurl.hpp"
#include "cni-shim/ttrpc/server.hpp"
#include "cni-shim/ttrpc/unix_socket.hpp"

using namespace kestrel;
using namespace kestrel::shim;

TEST_CASE("forward_request_bytes: a full envelope, the event under its bare type name") {
    containerd::events::TaskExit x;
    x.set_container_id("c1");
    x.set_id("c1");
    x.set_pid(7);
    x.set_exit_status(3);
    std::string bytes = forward_request_bytes("default", topic::kExit, x, 1'700'000'000'123'456'789);
    // The wire bytes, field by field (protobuf encoding: tag = field << 3 | wire type).
    // ForwardRequest.envelope (1, length-delimited) holding Envelope{timestamp=1, namespace=2,
    // topic=3, event=4}.
    REQUIRE(bytes.size() > 2);
    CHECK(static_cast<unsigned char>(bytes[0]) == 0x0a);
    std::string ev = x.SerializeAsString();
    std::string any = std::string("\x0a\x1a") + "containerd.events.TaskExit" + "\x12" + static_cast<char>(ev.size()) + ev;
    std::string ts = std::string("\x08") + "\x80\xe2\xcf\xaa\x06" + "\x10" + "\x95\x9a\xef\x3a";
    std::string env = std::string("\x0a") + static_cast<char>(ts.size()) + ts + "\x12\x07" + "default" + "\x1a\x0b" +
                      "/tasks/exit" + "\x22" + static_cast<char>(any.size()) + any;
    std::string want = std::string("\x0a") + static_cast<char>(env.size()) + env;
    CHECK(bytes == want);

    containerd::services::events::ttrpc::v1::ForwardRequest req;
    REQUIRE(req.ParseFromString(bytes));
    CHECK(req.envelope().namespace_() == "default");
    CHECK(req.envelope().topic() == "/tasks/exit");
    CHECK(req.envelope().timestamp().seconds() == 1'700'000'000);
    CHECK(req.envelope().timestamp().nanos() == 123'456'789);
    containerd::events::TaskExit back;
    REQUIRE(shim_proto::unpack_containerd_any(req.envelope().event(), &back));
    CHECK(back.exit_status() == 3);
}

TEST_CASE("EventPublisher forwards in order over ttrpc with the namespace in the metadata") {
    auto dir = std::filesystem::temp_directory_path() / ("kestrel-ev-test-" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir);
    std::string path = (dir / "ttrpc.sock").string();
    auto listener = ttrpc::listen_unix(path);
    REQUIRE(listener);
    ttrpc::Server server(std::move(*listener));
    std::mutex mu;
    std::condition_variable cv;
    std::vector<std::string> topics, namespaces;
    server.register_method("containerd.services.events.ttrpc.v1.Events", "Forward",
                           [&](const ttrpc::CallContext& ctx, std::string_view p) -> std::expected<std::string, ttrpc::Status> {
                               containerd::services::events::ttrpc::v1::ForwardRequest r;
                               if (!r.ParseFromArray(p.data(), static_cast<int>(p.size()))) return std::unexpected(ttrpc::Status{ttrpc::Code::InvalidArgument, "bad"});
                               std::lock_guard lk(mu);
                               topics.push_back(r.envelope().topic());
                               namespaces.push_back(ctx.ns + "/" + r.envelope().namespace_());
                               cv.notify_all();
                               return std::string();
                           });
    REQUIRE(server.start());
    {
        EventPublisher pub("unix://" + path, "k8s.io");
        containerd::events::TaskStart s;
        s.set_container_id("c");
        pub.publish(topic::kStart, s);
        containerd::events::TaskExit x;
        x.set_container_id("c");
        pub.publish(topic::kExit, x);
        pub.drain(std::chrono::seconds(10));  // returns once both were answered
        std::lock_guard lk(mu);
        CHECK(topics.size() == 2);
    }
    server.shutdown();
    CHECK(topics == std::vector<std::string>{"/tasks/start", "/tasks/exit"});
    CHECK(namespaces == std::vector<std::string>{"k8s.io/k8s.io", "k8s.io/k8s.io"});
    std::filesystem::remove_all(dir);
}
