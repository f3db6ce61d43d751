#include "vmm/api/api_server.hpp"

#include <httplib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include "vmm/base/log.hpp"
#include "vmm/seccomp/seccomp.hpp"

namespace kestrel::api {

namespace {

constexpr time_t kIoTimeoutSeconds = ApiServer::kIoTimeoutSeconds;

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

void answer(httplib::Response& res, const ApiResponse& a) {
    res.status = a.status;
    if (!a.body.empty()) res.set_content(a.body, a.content_type.c_str());
}

// Why httplib refused a request before any route saw it (its status: 400 for a malformed
// request or a method it has no routes for (TRACE, or one it does not know), 404 for
// OPTIONS, 413 for a body over the bound, 414 for a request line over 8 KiB).
std::string refused_by_http(const httplib::Request& req, int status) {
    const std::string what = req.method.empty() ? std::string("request")
                             : req.path.empty()  ? req.method
                                                 : req.method + " " + req.path;
    if (req.method != "GET" && req.method != "HEAD" && req.method != "PUT" && req.method != "PATCH" &&
        (status == 400 || status == 404 || status == 405) && !req.method.empty())
        return fmt::format("{}: method not supported (GET, PUT, PATCH)", what);
    switch (status) {
    case 413: {
        const auto length = req.get_header_value("Content-Length");
        // httplib refuses application/x-www-form-urlencoded bodies (curl -d without a
        // Content-Type) over 8192 bytes whatever the payload bound.
        if (req.get_header_value("Content-Type").starts_with("application/x-www-form-urlencoded") &&
            std::strtoull(length.c_str(), nullptr, 10) <= kMaxBodyBytes)
            return fmt::format("{}: a body sent as application/x-www-form-urlencoded may be at most 8192 "
                               "bytes; send it with Content-Type: application/json (up to {} bytes)",
                               what, kMaxBodyBytes);
        return fmt::format("{}: the body is {} bytes, more than the {} allowed", what,
                           length.empty() ? std::string("more than that") : length, kMaxBodyBytes);
    }
    case 414: return "the request line is longer than 8192 bytes";
    default: return fmt::format("{}: not a valid HTTP/1.1 request (HTTP status {})", what, status);
    }
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
    svr->set_payload_max_length(kMaxBodyBytes);
    svr->set_read_timeout(kIoTimeoutSeconds, 0);
    svr->set_write_timeout(kIoTimeoutSeconds, 0);
    svr->set_keep_alive_max_count(100);
    svr->set_keep_alive_timeout(kIoTimeoutSeconds);
    auto handle = [queue](const httplib::Request& req, httplib::Response& res) {
        auto parsed = parse_api_request(req.method, req.path, req.body);
        if (!parsed) {
            log::debug("API {} {}: {}", req.method, req.path, parsed.error().what());
            return answer(res, fault(parsed.error()));
        }
        answer(res, queue->call(std::move(*parsed)));
    };
    svr->Get(".*", handle);
    svr->Put(".*", handle);
    svr->Patch(".*", handle);
    svr->Post(".*", handle);    // refused by parse_api_request with a fault body
    svr->Delete(".*", handle);
    svr->set_exception_handler([](const httplib::Request& req, httplib::Response& res, std::exception_ptr) {
        answer(res, fault(Error{fmt::format("{} {}: internal error", req.method, req.path), 0, ErrorKind::Host}));
    });
    // Called for every answer of status >= 400: the ones with a fault body already are ours.
    // Firecracker answers every refused request 400 with {"fault_message"}, so the ones
    // httplib makes itself get that too.
    auto refused = [](const httplib::Request& req, httplib::Response& res) {
        if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
        const auto why = refused_by_http(req, res.status);
        log::debug("API: {}", why);
        answer(res, fault(Error{why, 0, ErrorKind::BadRequest}));
        return httplib::Server::HandlerResponse::Handled;
    };
    svr->set_error_handler(httplib::Server::HandlerWithResponse(refused));
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
