// The Task service's answers that need no VM, over a real ttrpc server and client: what
// containerd gets for malformed, hostile or out-of-order requests, Connect and Shutdown.
// Everything that boots a pod VM is covered by the nested case pod-ctr.
#include "cni-shim/shim/task_service.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>

#include <doctest/doctest.h>

#include "cni-shim/proto/shim.pb.h"
#include "cni-shim/ttrpc/client.hpp"
#include "cni-shim/ttrpc/unix_socket.hpp"

using namespace kestrel;
using namespace kestrel::shim;
namespace task = containerd::task::v2;

namespace {
struct Fixture {
    std::filesystem::path dir;
    std::string sock;
    std::atomic<int> exits{0};
    std::unique_ptr<TaskService> service;
    std::unique_ptr<ttrpc::Server> server;

    Fixture() {
        char t[] = "/tmp/kestrel-task-XXXXXX";
        dir = ::mkdtemp(t);
        sock = (dir / "shim.sock").string();
        auto l = ttrpc::listen_unix(sock);
        REQUIRE(l);
        PodVmConfig cfg;
        cfg.kestrel = "/nonexistent/kestrel";
        service = std::make_unique<TaskService>(ShimIdentity{"default", "pod1", (dir / "state").string(), sock}, cfg,
                                                std::make_unique<EventPublisher>("", "default"), [this] { ++exits; });
        server = std::make_unique<ttrpc::Server>(std::move(*l));
        service->register_on(*server);
        REQUIRE(server->start());
    }
    ~Fixture() {
        server->shutdown();
        std::filesystem::remove_all(dir);
    }
    std::expected<std::string, ttrpc::Status> call(const char* method, const google::protobuf::Message& m) {
        return ttrpc::call_once("unix://" + sock, "containerd.task.v2.Task", method, m.SerializeAsString(),
                                ttrpc::CallOptions{"default", std::chrono::seconds(30)});
    }
    std::string bundle(const std::string& config) {
        auto b = dir / "bundle";
        std::filesystem::create_directories(b);
        std::ofstream(b / "config.json") << config;
        return b.string();
    }
};

ttrpc::Code code_of(const std::expected<std::string, ttrpc::Status>& r) { return r ? ttrpc::Code::Ok : r.error().code; }
}  // namespace

TEST_CASE("Task methods on unknown or invalid ids answer NotFound / InvalidArgument") {
    Fixture f;
    task::StateRequest st;
    st.set_id("nope");
    CHECK(code_of(f.call("State", st)) == ttrpc::Code::NotFound);
    st.set_id("../etc");
    auto bad = f.call("State", st);
    CHECK(code_of(bad) == ttrpc::Code::InvalidArgument);
    CHECK(bad.error().message.find("not a valid identifier") != std::string::npos);
    task::StartRequest s;
    s.set_id("nope");
    CHECK(code_of(f.call("Start", s)) == ttrpc::Code::NotFound);
    task::WaitRequest w;
    w.set_id("nope");
    CHECK(code_of(f.call("Wait", w)) == ttrpc::Code::NotFound);
    task::KillRequest k;
    k.set_id("nope");
    k.set_signal(15);
    CHECK(code_of(f.call("Kill", k)) == ttrpc::Code::NotFound);
    k.set_signal(0);
    CHECK(code_of(f.call("Kill", k)) == ttrpc::Code::InvalidArgument);
    k.set_signal(65);
    CHECK(code_of(f.call("Kill", k)) == ttrpc::Code::InvalidArgument);
    task::DeleteRequest d;
    d.set_id("nope");
    CHECK(code_of(f.call("Delete", d)) == ttrpc::Code::NotFound);
    task::ExecProcessRequest e;
    e.set_id("nope");
    e.set_exec_id("e1");
    e.mutable_spec()->set_value("{}");
    CHECK(code_of(f.call("Exec", e)) == ttrpc::Code::NotFound);
    e.mutable_spec()->set_value("not json");
    CHECK(code_of(f.call("Exec", e)) == ttrpc::Code::InvalidArgument);
    task::ResizePtyRequest r;
    r.set_id("nope");
    r.set_width(70000);
    CHECK(code_of(f.call("ResizePty", r)) == ttrpc::Code::InvalidArgument);
    task::PidsRequest p;
    p.set_id("nope");
    CHECK(code_of(f.call("Pids", p)) == ttrpc::Code::NotFound);
    task::StatsRequest sr;
    sr.set_id("nope");
    CHECK(code_of(f.call("Stats", sr)) == ttrpc::Code::NotFound);
    task::PauseRequest pr;
    pr.set_id("nope");
    CHECK(code_of(f.call("Pause", pr)) == ttrpc::Code::NotFound);
    CHECK(code_of(f.call("Resume", pr)) == ttrpc::Code::NotFound);
    CHECK(code_of(f.call("Update", task::UpdateTaskRequest())) == ttrpc::Code::Unimplemented);
    CHECK(code_of(f.call("Checkpoint", task::CheckpointTaskRequest())) == ttrpc::Code::Unimplemented);
    // Bytes that are not the message at all.
    auto junk = ttrpc::call_once("unix://" + f.sock, "containerd.task.v2.Task", "State", std::string("\xff\xff\xff", 3),
                                 ttrpc::CallOptions{"default", std::chrono::seconds(10)});
    CHECK(code_of(junk) == ttrpc::Code::InvalidArgument);
}

TEST_CASE("Create refuses bad bundles, foreign pods and non-FIFO stdio before booting anything") {
    Fixture f;
    task::CreateTaskRequest c;
    c.set_id("ctr1");
    c.set_bundle("relative/bundle");
    CHECK(code_of(f.call("Create", c)) == ttrpc::Code::InvalidArgument);
    c.set_bundle("/tmp/../etc");
    CHECK(code_of(f.call("Create", c)) == ttrpc::Code::InvalidArgument);
    c.set_bundle(f.bundle("{not json"));
    auto notjson = f.call("Create", c);
    CHECK(code_of(notjson) == ttrpc::Code::InvalidArgument);
    // A container of another pod must not be created by this pod's shim.
    c.set_bundle(f.bundle(R"({"annotations":{"io.kubernetes.cri.sandbox-id":"pod2"}})"));
    auto foreign = f.call("Create", c);
    REQUIRE(code_of(foreign) == ttrpc::Code::InvalidArgument);
    CHECK(foreign.error().message.find("belongs to pod pod2") != std::string::npos);
    // stdout naming a regular file: refused, the file untouched.
    c.set_bundle(f.bundle(R"({"annotations":{"io.kubernetes.cri.sandbox-id":"pod1"}})"));
    std::string victim = (f.dir / "victim").string();
    std::ofstream(victim) << "keep";
    c.set_stdout(victim);
    auto file = f.call("Create", c);
    REQUIRE(code_of(file) == ttrpc::Code::InvalidArgument);
    CHECK(file.error().message.find("not a FIFO") != std::string::npos);
    c.set_stdout("syslog://host/x");
    auto scheme = f.call("Create", c);
    REQUIRE(code_of(scheme) == ttrpc::Code::InvalidArgument);
    CHECK(scheme.error().message.find("unsupported scheme") != std::string::npos);
    c.set_stdout("");
    c.set_checkpoint("/x");
    CHECK(code_of(f.call("Create", c)) == ttrpc::Code::Unimplemented);
    c.set_checkpoint("");
    for (int i = 0; i < 65; ++i) c.add_rootfs()->set_type("bind");
    CHECK(code_of(f.call("Create", c)) == ttrpc::Code::InvalidArgument);
    std::ifstream in(victim);
    std::string s;
    in >> s;
    CHECK(s == "keep");
}

TEST_CASE("Connect answers the shim's pid; Shutdown with no task asks the shim to exit") {
    Fixture f;
    task::ConnectRequest c;
    c.set_id("pod1");
    auto r = f.call("Connect", c);
    REQUIRE(r);
    task::ConnectResponse resp;
    REQUIRE(resp.ParseFromString(*r));
    CHECK(resp.shim_pid() == static_cast<std::uint32_t>(::getpid()));
    CHECK(resp.task_pid() == 0);
    CHECK(f.exits == 0);
    CHECK(f.call("Shutdown", task::ShutdownRequest()));
    CHECK(f.exits == 1);
}

TEST_CASE("Create that cannot boot the VM says why and leaves no container behind") {
    Fixture f;
    task::CreateTaskRequest c;
    c.set_id("pod1");
    c.set_bundle(f.bundle(R"({"annotations":{"io.kubernetes.cri.sandbox-id":"pod1"}})"));
    auto r = f.call("Create", c);  // kestrel is /nonexistent: its API never comes up (10 s)
    REQUIRE_FALSE(r);
    CHECK(r.error().message.find("did not serve") != std::string::npos);
    task::StateRequest st;
    st.set_id("pod1");
    CHECK(code_of(f.call("State", st)) == ttrpc::Code::NotFound);
    // Now that the pod is empty, Shutdown lets the shim go.
    CHECK(f.call("Shutdown", task::ShutdownRequest()));
    CHECK(f.exits == 1);
}
