#include "vmm/api/api_server.hpp"

#include <httplib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include "vmm/base/log.hpp"
#include "vmm/seccomp/seccomp.hpp"

namespace kestrel::api {

namespace {

constexpr time_t kIoTimeoutSeconds = 5;

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

}  // namespace

Result<std::unique_ptr<ApiServer>> ApiServer::start(const std::string& socket_path, RequestQueue& queue) {
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
    auto handle = [&queue](const httplib::Request& req, httplib::Response& res) {
        auto parsed = parse_api_request(req.method, req.path, req.body);
        if (!parsed) {
            log::debug("API {} {}: {}", req.method, req.path, parsed.error().what());
            return answer(res, fault(parsed.error()));
        }
        answer(res, queue.call(std::move(*parsed)));
    };
    svr->Get(".*", handle);
    svr->Put(".*", handle);
    svr->Patch(".*", handle);
    svr->Post(".*", handle);    // refused by parse_api_request with a fault body
    svr->Delete(".*", handle);
    svr->set_exception_handler([](const httplib::Request& req, httplib::Response& res, std::exception_ptr) {
        answer(res, fault(Error{fmt::format("{} {}: internal error", req.method, req.path), 0, ErrorKind::Host}));
    });
    if (!svr->bind_to_port(socket_path, 80)) return fail_errno("--api-sock '{}': cannot listen", socket_path);
    ::chmod(socket_path.c_str(), 0600);
    auto self = std::unique_ptr<ApiServer>(new ApiServer(socket_path, std::move(svr)));
    self->thread_ = std::thread([s = self->svr_.get()] { s->listen_after_bind(); });
    log::info("API on unix socket {}", socket_path);
    return self;
}

ApiServer::ApiServer(std::string path, std::unique_ptr<httplib::Server> svr)
    : path_(std::move(path)), svr_(std::move(svr)) {}

ApiServer::~ApiServer() {
    svr_->stop();
    if (thread_.joinable()) thread_.join();
    ::unlink(path_.c_str());
}

}  // namespace kestrel::api
