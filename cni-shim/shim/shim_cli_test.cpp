// The `start` and `delete` subcommands of the real binary, as containerd runs them
// (runtime/v2/shim/util.go Command: flags, cwd = bundle, TTRPC_ADDRESS), with the socket
// and state directories moved under a temporary directory. No VM is booted.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include <doctest/doctest.h>

#include "cni-shim/proto/shim.pb.h"
#include "cni-shim/ttrpc/client.hpp"
#include "cni-shim/ttrpc/unix_socket.hpp"

namespace fs = std::filesystem;

namespace {
struct Run {
    int status = -1;
    std::string out;
};

// Runs the shim with `args` in `cwd` and the test's environment, capturing stdout+stderr
// together as containerd does (CombinedOutput) until the pipe closes.
Run run_shim(const std::vector<std::string>& args, const std::string& cwd, const std::string& root) {
    const char* bin = std::getenv("KESTREL_SHIM_BIN");
    REQUIRE_MESSAGE(bin, "KESTREL_SHIM_BIN not set (meson sets it)");
    int p[2];
    REQUIRE(::pipe(p) == 0);
    pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        ::dup2(p[1], 1);
        ::dup2(p[1], 2);
        ::close(p[0]);
        // p[1] is left open too (not close-on-exec): the daemon must not keep it, or this
        // read would never see EOF.
        if (::chdir(cwd.c_str()) != 0) ::_exit(126);
        ::setenv("KESTREL_SHIM_STATE_ROOT", (root + "/state").c_str(), 1);
        ::setenv("KESTREL_SHIM_SOCKET_DIR", (root + "/s").c_str(), 1);
        ::setenv("KESTREL_SHIM_CONFIG", (root + "/no-config.json").c_str(), 1);
        ::setenv("TTRPC_ADDRESS", "", 1);
        std::vector<char*> av{const_cast<char*>(bin)};
        for (auto& a : args) av.push_back(const_cast<char*>(a.c_str()));
        av.push_back(nullptr);
        ::execv(bin, av.data());
        ::_exit(127);
    }
    ::close(p[1]);
    Run r;
    char buf[4096];
    for (ssize_t n; (n = ::read(p[0], buf, sizeof buf)) > 0;) r.out.append(buf, static_cast<std::size_t>(n));
    ::close(p[0]);
    ::waitpid(pid, &r.status, 0);
    return r;
}

std::vector<std::string> flags(const std::string& id) {
    return {"-namespace", "default", "-address", "/run/containerd/containerd.sock", "-publish-binary", "/usr/bin/containerd", "-id", id};
}

std::string make_bundle(const fs::path& root, const std::string& id, const std::string& config) {
    auto b = root / "bundles" / id;
    fs::create_directories(b);
    std::ofstream(b / "config.json") << config;
    return b.string();
}

std::string slurp(const fs::path& p) {
    std::ifstream in(p);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
}
}  // namespace

TEST_CASE("start: the address on stdout and nothing else, one shim per pod, Shutdown ends it") {
    char t[] = "/tmp/kestrel-cli-XXXXXX";
    fs::path root = ::mkdtemp(t);
    std::string sb = make_bundle(root, "pod1", R"({"annotations":{"io.kubernetes.cri.sandbox-id":"pod1","io.kubernetes.cri.container-type":"sandbox"}})");
    auto args = flags("pod1");
    args.push_back("start");
    Run r = run_shim(args, sb, root.string());  // returns only once the daemon let go of the pipe
    REQUIRE(WIFEXITED(r.status));
    CHECK(WEXITSTATUS(r.status) == 0);
    REQUIRE(r.out.starts_with("unix://"));
    CHECK(r.out.find('\n') == std::string::npos);
    std::string sock = r.out.substr(7);
    CHECK(sock.starts_with((root / "s/kestrel-").string()));
    CHECK(slurp(fs::path(sb) / "address") == r.out);
    REQUIRE(kestrel::ttrpc::connect_unix(sock, std::chrono::seconds(2)));
    CHECK((fs::status(sock).permissions() & fs::perms::others_all) == fs::perms::none);

    // A container of the same pod: the same shim's address, no second daemon.
    std::string cb = make_bundle(root, "app", R"({"annotations":{"io.kubernetes.cri.sandbox-id":"pod1","io.kubernetes.cri.container-type":"container"}})");
    auto args2 = flags("app");
    args2.push_back("start");
    Run r2 = run_shim(args2, cb, root.string());
    CHECK(WEXITSTATUS(r2.status) == 0);
    CHECK(r2.out == r.out);
    CHECK(slurp(fs::path(cb) / "address") == r.out);
    // A container of a pod without a shim is refused.
    std::string lone = make_bundle(root, "lone", R"({"annotations":{"io.kubernetes.cri.sandbox-id":"pod9"}})");
    auto args3 = flags("lone");
    args3.push_back("start");
    Run r3 = run_shim(args3, lone, root.string());
    CHECK(WEXITSTATUS(r3.status) == 1);
    CHECK(r3.out.find("pod9") != std::string::npos);

    // Connect names the daemon; Shutdown with no task makes it exit and remove its socket.
    containerd::task::v2::ConnectRequest c;
    c.set_id("pod1");
    auto cr = kestrel::ttrpc::call_once(r.out, "containerd.task.v2.Task", "Connect", c.SerializeAsString(), {"default"});
    REQUIRE(cr);
    containerd::task::v2::ConnectResponse resp;
    REQUIRE(resp.ParseFromString(*cr));
    pid_t daemon = static_cast<pid_t>(resp.shim_pid());
    CHECK(daemon > 1);
    CHECK(::getpgid(daemon) == daemon);  // its own session (setsid)
    auto sr = kestrel::ttrpc::call_once(r.out, "containerd.task.v2.Task", "Shutdown", containerd::task::v2::ShutdownRequest().SerializeAsString(), {"default"});
    CHECK(sr);
    for (int i = 0; i < 100 && ::kill(daemon, 0) == 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(50));
    CHECK(::kill(daemon, 0) != 0);
    CHECK_FALSE(fs::exists(sock));
    fs::remove_all(root);
}

TEST_CASE("delete: a DeleteResponse on stdout; a dead pod's socket and state are removed") {
    char t[] = "/tmp/kestrel-cli-XXXXXX";
    fs::path root = ::mkdtemp(t);
    std::string b = make_bundle(root, "c1", "{}");
    // Leave what a SIGKILLed shim leaves: its start made the socket and state, then it died.
    auto args = flags("c1");
    args.push_back("start");
    Run s = run_shim(args, b, root.string());
    REQUIRE(WEXITSTATUS(s.status) == 0);
    std::string sock = s.out.substr(7);
    containerd::task::v2::ConnectRequest c;
    c.set_id("c1");
    auto cr = kestrel::ttrpc::call_once(s.out, "containerd.task.v2.Task", "Connect", c.SerializeAsString(), {"default"});
    REQUIRE(cr);
    containerd::task::v2::ConnectResponse resp;
    REQUIRE(resp.ParseFromString(*cr));
    ::kill(static_cast<pid_t>(resp.shim_pid()), SIGKILL);
    for (int i = 0; i < 100 && ::kill(static_cast<pid_t>(resp.shim_pid()), 0) == 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(50));
    REQUIRE(fs::exists(sock));
    REQUIRE(fs::exists(root / "state"));
    REQUIRE_FALSE(fs::is_empty(root / "state"));

    auto dargs = flags("c1");
    dargs.insert(dargs.end(), {"-bundle", b, "delete"});
    Run d = run_shim(dargs, "/", root.string());
    REQUIRE(WIFEXITED(d.status));
    CHECK(WEXITSTATUS(d.status) == 0);
    containerd::task::v2::DeleteResponse del;
    REQUIRE(del.ParseFromString(d.out));
    CHECK(del.exit_status() == 137);
    CHECK(del.exited_at().seconds() > 0);
    CHECK_FALSE(fs::exists(sock));
    CHECK(fs::is_empty(root / "state"));
    fs::remove_all(root);
}

TEST_CASE("bad command lines are refused with exit 2") {
    char t[] = "/tmp/kestrel-cli-XXXXXX";
    fs::path root = ::mkdtemp(t);
    Run a = run_shim({"-namespace", "default", "-id", "../x", "start"}, "/", root.string());
    CHECK(WEXITSTATUS(a.status) == 2);
    Run b = run_shim({"-namespace", "default", "-id", "x", "frobnicate"}, "/", root.string());
    CHECK(WEXITSTATUS(b.status) == 2);
    fs::remove_all(root);
}
