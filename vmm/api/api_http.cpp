#include "vmm/api/api_http.hpp"

#include <httplib.h>

#include "vmm/api/api_server.hpp"
#include "vmm/base/log.hpp"

namespace kestrel::api {

namespace {

constexpr time_t kIoTimeoutSeconds = ApiServer::kIoTimeoutSeconds;

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

void configure_http(httplib::Server& svr, std::function<ApiResponse(ApiRequest)> call) {
    svr.set_payload_max_length(kMaxBodyBytes);
    svr.set_read_timeout(kIoTimeoutSeconds, 0);
    svr.set_write_timeout(kIoTimeoutSeconds, 0);
    svr.set_keep_alive_max_count(100);
    svr.set_keep_alive_timeout(kIoTimeoutSeconds);
    auto handle = [call = std::move(call)](const httplib::Request& req, httplib::Response& res) {
        auto parsed = parse_api_request(req.method, req.path, req.body);
        if (!parsed) {
            log::debug("API {} {}: {}", req.method, req.path, parsed.error().what());
            return answer(res, fault(parsed.error()));
        }
        answer(res, call(std::move(*parsed)));
    };
    svr.Get(".*", handle);
    svr.Put(".*", handle);
    svr.Patch(".*", handle);
    svr.Post(".*", handle);    // refused by parse_api_request with a fault body
    svr.Delete(".*", handle);
    svr.set_exception_handler([](const httplib::Request& req, httplib::Response& res, std::exception_ptr) {
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
    svr.set_error_handler(httplib::Server::HandlerWithResponse(refused));
}

}  // namespace kestrel::api
