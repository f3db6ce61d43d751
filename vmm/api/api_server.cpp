#include "vmm/api/api_server.hpp"

#include <httplib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include "vmm/api/api_http.hpp"
#include "vmm/base/log.hpp"
#include "vmm/seccomp/seccomp.hpp"

namespace kestrel::api {

namespace {

// A server whose thread a client still held at exit (~ApiServer): kept reachable, never freed.
httplib::Server* g_parked_server = nullptr;

// True when something listens on the unix socket at `path`.
bool socket_in_use(const std::string& path) {
    UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::memcpy(a.sun_path, path.data(), std::min(path.size(), sizeof a.sun_path - 1));
    return fd && ::connect(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
}

Result<void> prepare_path(const std::string& path) {
    if (path.empty() || path.size() >= sizeof(sockaddr_un{}.sun_path))
        return bad_request("--api-sock '{}': a unix socket path must be 1-{} bytes", path, sizeof(sockaddr_un{}.sun_path) - 1);
    struct stat st {};
    if (::lstat(path.c_str(), &st) != 0) return {};
    if (!S_ISSOCK(st.st_mode)) return fail("--api-sock '{}': a file that is not a socket is in the way", path);
    if (socket_in_use(path)) return fail("--api-sock '{}': another process is serving on this socket", path);
    if (::unlink(path.c_str()) != 0) return fail_errno("--api-sock '{}': removing the stale socket", path);
    log::info("--api-sock '{}': replaced a stale socket nobody listened on", path);
    return {};
}

}  // namespace

Result<std::unique_ptr<ApiServer>> ApiServer::start(const std::string& socket_path,
                                                    std::shared_ptr<RequestQueue> queue) {
    TRY(prepare_path(socket_path));
    auto svr = std::make_unique<httplib::Server>();
    // Called once, on the listener thread, as it starts serving: the worker exists once the
    // pool does, so both take their filter then and neither may start a thread afterwards.
    svr->new_task_queue = [] {
        auto* pool = new httplib::ThreadPool(1);
        pool->enqueue([] { seccomp::apply(seccomp::ThreadKind::Api); });
        seccomp::apply(seccomp::ThreadKind::Api);
        return pool;
    };
    svr->set_address_family(AF_UNIX);
    configure_http(*svr, [queue](ApiRequest r) { return queue->call(std::move(r)); });
    if (!svr->bind_to_port(socket_path, 80)) return fail_errno("--api-sock '{}': cannot listen", socket_path);
    ::chmod(socket_path.c_str(), 0600);
    auto self = std::unique_ptr<ApiServer>(new ApiServer(socket_path, std::move(svr)));
    auto serve = [](void* server) -> void* {
        static_cast<httplib::Server*>(server)->listen_after_bind();
        return nullptr;
    };
    if (int e = ::pthread_create(&self->thread_, nullptr, serve, self->svr_.get()); e != 0)
        return fail("--api-sock '{}': cannot start the API thread: {}", socket_path, std::strerror(e));
    self->thread_started_ = true;
    log::info("API on unix socket {}", socket_path);
    return self;
}

ApiServer::ApiServer(std::string path, std::unique_ptr<httplib::Server> svr)
    : path_(std::move(path)), svr_(std::move(svr)) {}

ApiServer::~ApiServer() {
    svr_->stop();
    ::unlink(path_.c_str());
    if (!thread_started_) return;
    timespec deadline{};
    ::clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_nsec += std::chrono::nanoseconds(kStopLimit).count();
    deadline.tv_sec += deadline.tv_nsec / 1'000'000'000;
    deadline.tv_nsec %= 1'000'000'000;
    if (::pthread_timedjoin_np(thread_, nullptr, &deadline) == 0) return;
    // httplib checks for stop() only between requests of a connection, so a client that
    // stays connected holds the worker (and the listener, which joins it) until its
    // keep-alive or read timeout. Nothing of the VM waits on them: leave both, with the
    // server they use, to the process's exit (the RequestQueue is shared with them, closed).
    log::debug("API: a client still holds the API thread; leaving it to the process's exit");
    ::pthread_detach(thread_);
    g_parked_server = svr_.release();
}

}  // namespace kestrel::api
