// The agent client against the real kestrel-agent listening on a unix socket (its test
// mode, PROTOCOL.md), and the vsock handshake against a socket that answers as kestrel's
// hybrid vsock does (README "--vsock"; kestrel itself needs KVM to serve it).
#include "cni-shim/shim/agent_client.hpp"

#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <thread>

#include <doctest/doctest.h>

#include "cni-shim/ttrpc/unix_socket.hpp"

using namespace kestrel;
using namespace kestrel::shim;
using nlohmann::json;

TEST_CASE("agent frames: u32 big-endian length then JSON; bad lengths refused") {
    int sp[2];
    REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM, 0, sp) == 0);
    UniqueFd a(sp[0]), b(sp[1]);
    std::string f = encode_agent_frame(json{{"op", "ping"}});
    CHECK(f.substr(0, 4) == std::string("\0\0\0\x0d", 4));
    REQUIRE(ttrpc::write_all(a.get(), f));
    auto j = read_agent_frame(b.get());
    REQUIRE(j);
    CHECK((*j)["op"] == "ping");
    REQUIRE(ttrpc::write_all(a.get(), std::string("\0\x10\0\x01", 4)));  // 1 MiB + 1
    CHECK_FALSE(read_agent_frame(b.get()));
    REQUIRE(ttrpc::write_all(a.get(), std::string("\0\0\0\x02[]", 6)));  // not an object
    CHECK_FALSE(read_agent_frame(b.get()));
}

TEST_CASE("vsock_connect completes the hybrid handshake and leaves the stream intact") {
    auto dir = std::filesystem::temp_directory_path() / ("kestrel-vsock-test-" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir);
    std::string path = (dir / "v.sock").string();
    auto l = ttrpc::listen_unix(path);
    REQUIRE(l);
    std::thread peer([&] {
        UniqueFd c(::accept(l->get(), nullptr, nullptr));
        char buf[64] = {};
        ssize_t n = ::read(c.get(), buf, sizeof buf);
        CHECK(std::string(buf, static_cast<std::size_t>(n)) == "CONNECT 1024\n");
        (void)ttrpc::write_all(c.get(), "OK 1073741824\nstream");  // the stream right behind
        UniqueFd c2(::accept(l->get(), nullptr, nullptr));
        (void)!::read(c2.get(), buf, sizeof buf);
        // a guest that does not listen: kestrel closes the connection
    });
    auto fd = vsock_connect(path, 1024, std::chrono::seconds(5));
    REQUIRE(fd);
    char buf[6];
    REQUIRE(::read(fd->get(), buf, 6) == 6);
    CHECK(std::string(buf, 6) == "stream");
    auto refused = vsock_connect(path, 1024, std::chrono::seconds(5));
    CHECK_FALSE(refused);
    peer.join();
    std::filesystem::remove_all(dir);
}

TEST_CASE("AgentClient against the real kestrel-agent: ping, errors by path, ids matched") {
    const char* agent = std::getenv("KESTREL_AGENT_BIN");
    REQUIRE_MESSAGE(agent, "KESTREL_AGENT_BIN not set (meson sets it)");
    auto dir = std::filesystem::temp_directory_path() / ("kestrel-agent-test-" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir);
    std::string sock = (dir / "agent.sock").string();
    std::string state = (dir / "state").string();
    pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        ::execl(agent, agent, "--listen", ("unix:" + sock).c_str(), "--state-dir", state.c_str(),
                "--cgroup-root", (dir / "nocgroup/x").c_str(), static_cast<char*>(nullptr));
        ::_exit(127);
    }
    Result<UniqueFd> fd = fail("not yet");
    for (int i = 0; i < 100 && !fd; ++i) {
        fd = ttrpc::connect_unix(sock, std::chrono::milliseconds(100));
        if (!fd) std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    REQUIRE(fd);
    auto client = AgentClient::open(std::move(*fd), [](AgentExit) {});
    REQUIRE(client);
    auto pong = (*client)->call(json{{"op", "ping"}});
    REQUIRE_MESSAGE(pong, pong.error().what());
    CHECK((*pong)["version"] == 1);
    auto bad = (*client)->call(json{{"op", "state"}, {"container", "no-such"}});
    REQUIRE_FALSE(bad);
    CHECK(bad.error().kind == ErrorKind::BadRequest);
    // Several callers at once each get their own answer.
    std::vector<std::thread> ts;
    std::atomic<int> ok{0};
    for (int i = 0; i < 8; ++i) ts.emplace_back([&] { if ((*client)->call(json{{"op", "ping"}})) ++ok; });
    for (auto& t : ts) t.join();
    CHECK(ok == 8);
    // Oversized: refused before sending; the connection stays usable.
    auto big = (*client)->call(json{{"op", "ping"}, {"pad", std::string(kMaxAgentFrame, 'x')}});
    REQUIRE_FALSE(big);
    CHECK(big.error().message.find("1 MiB") != std::string::npos);
    CHECK((*client)->call(json{{"op", "ping"}}));
    auto bye = (*client)->call(json{{"op", "shutdown"}});
    CHECK(bye);
    int st = 0;
    ::waitpid(pid, &st, 0);
    CHECK(WIFEXITED(st));
    CHECK(WEXITSTATUS(st) == 0);
    for (int i = 0; i < 100 && !(*client)->closed(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(20));
    CHECK((*client)->closed());
    CHECK_FALSE((*client)->call(json{{"op", "ping"}}));
    std::filesystem::remove_all(dir);
}

TEST_CASE("answers of the wrong types read as absent, never throw") {
    using nlohmann::json;
    CHECK(json_u32(json{{"pid", 42}}, "pid") == 42);
    CHECK(json_u32(json::parse(R"({"pid":"42"})"), "pid") == 0);
    CHECK(json_u32(json::parse(R"({"pid":-1})"), "pid") == 0);
    CHECK(json_u32(json::parse(R"({"pid":4294967296})"), "pid") == 0);
    CHECK(json_u32(json::parse("[1]"), "pid") == 0);
    CHECK(json_true(json::parse(R"({"ok":true})"), "ok"));
    CHECK_FALSE(json_true(json::parse(R"({"ok":"yes"})"), "ok"));
    CHECK_FALSE(json_true(json::parse(R"({"ok":1})"), "ok"));
    CHECK_FALSE(json_true(json::parse("null"), "ok"));
}

TEST_CASE("AgentClient: a hostile peer's odd answers fail the call, not the shim") {
    int sp[2];
    REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM, 0, sp) == 0);
    UniqueFd peer(sp[0]);
    std::atomic<int> exits{0};
    auto client = AgentClient::open(UniqueFd(sp[1]), [&](AgentExit e) { if (e.status == 0) ++exits; });
    REQUIRE(client);
    std::thread guest([&] {
        auto req = read_agent_frame(peer.get());
        REQUIRE(req);
        auto id = (*req)["id"].get<std::uint64_t>();
        // junk between answers: an event with bad types, an answer to nobody, a non-bool ok
        (void)ttrpc::write_all(peer.get(), encode_agent_frame(json{{"event", "exit"}, {"container", "../x"}, {"status", "s"}}));
        (void)ttrpc::write_all(peer.get(), encode_agent_frame(json{{"event", "exit"}, {"container", "c"}, {"status", "s"}}));
        (void)ttrpc::write_all(peer.get(), encode_agent_frame(json{{"id", 999999}, {"ok", true}}));
        (void)ttrpc::write_all(peer.get(), encode_agent_frame(json{{"id", id}, {"ok", "true"}, {"error", 5}}));
    });
    auto r = (*client)->call(json{{"op", "ping"}}, std::chrono::seconds(5));
    guest.join();
    REQUIRE_FALSE(r);
    CHECK(r.error().message == "agent ping: failed");
    CHECK(exits == 1);  // the one with a valid container id, its bad status read as 0
}
