// containerd-shim-kestrel-v2: containerd's runtime v2 shim for kestrel pods
// (containerd runtime/v2/README.md). containerd runs it as
//   containerd-shim-kestrel-v2 -namespace NS -address A -publish-binary B -id ID [-debug] start
// in the bundle (cwd), with TTRPC_ADDRESS in the environment, and reads the shim's ttrpc
// address from stdout; or `... -id ID -bundle DIR delete` after a shim died, reading a
// DeleteResponse from stdout. Everything else happens over ttrpc in the daemonized shim.
#include <fcntl.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <condition_variable>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <string>
#include <vector>

#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include "cni-shim/proto/shim.pb.h"
#include "cni-shim/shim/pod_key.hpp"
#include "cni-shim/shim/pod_net.hpp"
#include "cni-shim/shim/pod_vm.hpp"
#include "cni-shim/shim/task_service.hpp"
#include "cni-shim/ttrpc/server.hpp"
#include "cni-shim/ttrpc/unix_socket.hpp"

namespace {

using namespace kestrel;
using namespace kestrel::shim;

struct Flags {
    std::string ns, id, address, publish_binary, bundle, action;
    bool debug = false;
};

Result<Flags> parse_flags(int argc, char** argv) {
    Flags f;
    for (int i = 1; i < argc; ++i) {
        std::string a = argv[i];
        auto value = [&](std::string& dst) -> Result<void> {
            if (i + 1 >= argc) return bad_request("{} needs a value", a);
            dst = argv[++i];
            return {};
        };
        // Go's flag package accepts -flag and --flag, and -flag=value.
        if (a.starts_with("--")) a.erase(0, 1);
        if (auto eq = a.find('='); a.starts_with("-") && eq != std::string::npos) {
            std::string k = a.substr(0, eq), v = a.substr(eq + 1);
            if (k == "-namespace") f.ns = v;
            else if (k == "-id") f.id = v;
            else if (k == "-address") f.address = v;
            else if (k == "-publish-binary") f.publish_binary = v;
            else if (k == "-bundle") f.bundle = v;
            else if (k == "-debug") f.debug = v == "true";
            continue;
        }
        if (a == "-namespace") TRY(value(f.ns));
        else if (a == "-id") TRY(value(f.id));
        else if (a == "-address") TRY(value(f.address));
        else if (a == "-publish-binary") TRY(value(f.publish_binary));
        else if (a == "-bundle") TRY(value(f.bundle));
        else if (a == "-debug") f.debug = true;
        else if (a == "-socket" || a == "-ttrpc-address") { std::string ignored; TRY(value(ignored)); }  // newer containerd
        else if (!a.starts_with("-") && f.action.empty()) f.action = a;
        else if (a == "-v" || a == "-version") f.action = "version";
        else return bad_request("unknown argument '{}'", a);
    }
    if (f.action != "version") {
        if (!valid_identifier(f.ns)) return bad_request("-namespace '{}' is not a valid identifier", f.ns);
        if (!valid_identifier(f.id)) return bad_request("-id '{}' is not a valid identifier", f.id);
    }
    return f;
}

std::string config_path() {
    const char* p = std::getenv("KESTREL_SHIM_CONFIG");
    return p && *p ? p : "/etc/kestrel/shim.json";
}

std::string socket_dir() {
    const char* p = std::getenv("KESTREL_SHIM_SOCKET_DIR");  // for tests without /run
    return p && *p ? p : std::string(kDefaultSocketDir);
}

std::string state_root() {
    const char* p = std::getenv("KESTREL_SHIM_STATE_ROOT");
    return p && *p ? p : std::string(kDefaultStateRoot);
}

Result<void> write_file(const std::string& path, const std::string& content) {
    std::string tmp = path + ".tmp";
    {
        std::ofstream o(tmp, std::ios::trunc);
        if (!(o << content)) return fail_errno("write {}", tmp);
    }
    if (::rename(tmp.c_str(), path.c_str()) != 0) return fail_errno("rename {}", path);
    return {};
}

// The daemonized shim: serves the Task service on `listener` until Shutdown.
[[noreturn]] void serve(UniqueFd listener, const Flags& f, ShimIdentity id, const std::string& log_dir) {
    const char* ttrpc_address = std::getenv("TTRPC_ADDRESS");
    auto vm_cfg = load_pod_vm_config(config_path());
    if (!vm_cfg) {
        spdlog::error("{}", vm_cfg.error().what());
        std::_Exit(1);
    }
    vm_cfg->log_dir = log_dir;
    std::mutex mu;
    std::condition_variable cv;
    bool exit_requested = false;
    auto request_exit = [&] {
        std::lock_guard lk(mu);
        exit_requested = true;
        cv.notify_all();
    };
    auto publisher = std::make_unique<EventPublisher>(ttrpc_address ? ttrpc_address : "", f.ns);
    TaskService service(id, *vm_cfg, std::move(publisher), request_exit);
    ttrpc::Server server(std::move(listener));
    service.register_on(server);
    if (auto r = server.start(); !r) {
        spdlog::error("ttrpc server: {}", r.error().what());
        std::_Exit(1);
    }
    spdlog::info("kestrel shim {} for pod {} in namespace {} serving on {}", ::getpid(), id.group, f.ns, id.socket_path);
    {
        std::unique_lock lk(mu);
        cv.wait(lk, [&] { return exit_requested; });
    }
    // Answer the Shutdown call in flight before the connection goes (containerd waits for it).
    server.stop();
    service.stop_vm();
    server.shutdown();
    service.drain_events(std::chrono::seconds(10));
    ::unlink(id.socket_path.c_str());
    std::error_code ec;
    std::filesystem::remove_all(id.state_dir, ec);
    spdlog::info("shim exits");
    std::_Exit(0);
}

int do_start(const Flags& f) {
    // Nothing but the address may reach stdout, and containerd reads stderr too
    // (CombinedOutput): errors go to stderr only when start fails.
    char cwd[4096];
    if (!::getcwd(cwd, sizeof cwd)) return 1;
    std::string bundle = cwd;
    auto config = read_bundle_config(bundle);
    if (!config) {
        std::fprintf(stderr, "kestrel shim start: %s\n", config.error().what().c_str());
        return 1;
    }
    auto m = pod_membership(*config, f.id);
    if (!m) {
        std::fprintf(stderr, "kestrel shim start: %s\n", m.error().what().c_str());
        return 1;
    }
    std::string key = pod_key(f.address, f.ns, m->group);
    ShimIdentity id{f.ns, m->group, pod_state_dir(state_root(), key), shim_socket_path(socket_dir(), key)};
    std::string address = "unix://" + id.socket_path;

    // One shim per pod: a live socket for this pod means its shim serves this container too.
    if (auto probe = ttrpc::connect_unix(id.socket_path, std::chrono::milliseconds(500)); probe) {
        if (auto w = write_file(bundle + "/address", address); !w) {
            std::fprintf(stderr, "kestrel shim start: %s\n", w.error().what().c_str());
            return 1;
        }
        std::fputs(address.c_str(), stdout);
        return 0;
    }
    if (!m->is_sandbox) {
        std::fprintf(stderr, "kestrel shim start: container %s joins pod %s, whose shim is not running\n", f.id.c_str(), m->group.c_str());
        return 1;
    }
    std::error_code ec;
    std::filesystem::create_directories(socket_dir(), ec);
    std::filesystem::create_directories(id.state_dir, ec);
    if (ec || ::chmod(id.state_dir.c_str(), 0700) != 0) {
        std::fprintf(stderr, "kestrel shim start: cannot make %s\n", id.state_dir.c_str());
        return 1;
    }
    auto listener = ttrpc::listen_unix(id.socket_path);
    if (!listener) {
        std::fprintf(stderr, "kestrel shim start: %s\n", listener.error().what().c_str());
        return 1;
    }
    ::chmod(id.socket_path.c_str(), 0600);
    // KESTREL_SHIM_LOG_DIR (tests): logs kept after the pod is gone, one set per pod key.
    const char* keep = std::getenv("KESTREL_SHIM_LOG_DIR");
    std::string log_dir = keep && *keep && keep[0] == '/' ? fmt::format("{}/{}", keep, key) : id.state_dir;
    std::filesystem::create_directories(log_dir, ec);
    std::string log = log_dir + "/shim.log";
    std::fflush(stdout);
    pid_t pid = ::fork();
    if (pid < 0) {
        std::perror("kestrel shim start: fork");
        return 1;
    }
    if (pid == 0) {
        // The daemon: its own session, no tie to containerd's pipe (containerd waits for the
        // pipe's EOF), the log in the pod's state directory.
        ::setsid();
        int null = ::open("/dev/null", O_RDWR);
        int lf = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
        ::dup2(null, 0);
        ::dup2(null, 1);
        ::dup2(lf >= 0 ? lf : null, 2);
        if (null > 2) ::close(null);
        if (lf > 2) ::close(lf);
        // Only the listener survives as fd 3: anything else the caller leaked (a second
        // copy of containerd's output pipe would keep containerd waiting) is closed.
        int lfd = listener->release();
        if (lfd != 3 && (::dup2(lfd, 3) < 0 || ::close(lfd) != 0)) std::_Exit(1);
        ::close_range(4, ~0U, 0);
        *listener = UniqueFd(3);
        if (::chdir(id.state_dir.c_str()) != 0) std::_Exit(1);
        spdlog::set_default_logger(spdlog::stderr_logger_mt("shim"));
        spdlog::set_level(spdlog::level::info);
        spdlog::flush_on(spdlog::level::info);
        serve(std::move(*listener), f, id, log_dir);
    }
    if (auto w = write_file(bundle + "/address", address); !w) {
        std::fprintf(stderr, "kestrel shim start: %s\n", w.error().what().c_str());
        return 1;
    }
    std::fputs(address.c_str(), stdout);
    return 0;
}

int do_delete(const Flags& f) {
    std::string bundle = f.bundle;
    if (bundle.empty()) {
        char cwd[4096];
        if (::getcwd(cwd, sizeof cwd)) bundle = cwd;
    }
    std::string group = f.id;
    std::optional<std::string> netns;
    if (!bundle.empty()) {
        if (auto config = read_bundle_config(bundle); config) {
            if (auto m = pod_membership(*config, f.id); m) group = m->group;
            if (auto n = spec_netns_path(*config); n) netns = *n;
        }
        // As containerd's runc shim: nothing may stay mounted on the bundle's rootfs.
        for (int i = 0; i < 8 && ::umount2((bundle + "/rootfs").c_str(), MNT_DETACH) == 0; ++i) {}
    }
    std::string key = pod_key(f.address, f.ns, group);
    std::string sock = shim_socket_path(socket_dir(), key);
    std::string state = pod_state_dir(state_root(), key);
    // The pod's shim still answers: it owns the VM and the other containers; leave them.
    if (!ttrpc::connect_unix(sock, std::chrono::milliseconds(500))) {
        kill_recorded_kestrel(state);
        // The taps died with the shim's and kestrel's fds; our tc filters and qdiscs on the
        // pod's veth did not.
        if (netns) detach_netns(*netns);
        ::unlink(sock.c_str());
        std::error_code ec;
        std::filesystem::remove_all(state, ec);
    }
    containerd::task::v2::DeleteResponse resp;
    resp.set_exit_status(128 + SIGKILL);  // as runc's shim reports a task it could not wait for
    timespec ts{};
    ::clock_gettime(CLOCK_REALTIME, &ts);
    resp.mutable_exited_at()->set_seconds(ts.tv_sec);
    resp.mutable_exited_at()->set_nanos(static_cast<std::int32_t>(ts.tv_nsec));
    std::string out = resp.SerializeAsString();
    std::fwrite(out.data(), 1, out.size(), stdout);
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    ::signal(SIGPIPE, SIG_IGN);
    spdlog::set_default_logger(spdlog::stderr_logger_mt("shim-cli"));
    spdlog::set_level(spdlog::level::warn);
    auto f = parse_flags(argc, argv);
    if (!f) {
        std::fprintf(stderr, "containerd-shim-kestrel-v2: %s\n", f.error().what().c_str());
        return 2;
    }
    if (f->action == "version") {
        std::puts("containerd-shim-kestrel-v2 (kestrel)");
        return 0;
    }
    if (f->action == "start") return do_start(*f);
    if (f->action == "delete") return do_delete(*f);
    std::fprintf(stderr, "containerd-shim-kestrel-v2: action must be start or delete, not '%s'\n", f->action.c_str());
    return 2;
}
