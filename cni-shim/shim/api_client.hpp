// kestrel's API socket from the shim's side: one HTTP/1.1 request per connection over
// AF_UNIX (RFC 9112: request line, Host, Content-Length; the answer is read up to its
// Content-Length). Small on purpose: the shim sends a handful of Firecracker-style
// requests (README "API") and links none of the VMM.
#pragma once

#include <chrono>
#include <string>
#include <string_view>

#include "vmm/base/error.hpp"

namespace kestrel::shim {

struct HttpResponse {
    int status = 0;
    std::string body;
};

// Parses one response from `raw` (status line, headers, body by Content-Length). Fails on a
// malformed or incomplete response; the body is capped at 1 MiB.
Result<HttpResponse> parse_http_response(std::string_view raw);

Result<HttpResponse> api_request(const std::string& socket_path, std::string_view method, std::string_view target,
                                 std::string_view json_body,
                                 std::chrono::milliseconds timeout = std::chrono::seconds(30));

// api_request that also fails unless the status is 2xx (the message carries kestrel's answer).
Result<void> api_call(const std::string& socket_path, std::string_view method, std::string_view target,
                      std::string_view json_body, std::chrono::milliseconds timeout = std::chrono::seconds(30));

}  // namespace kestrel::shim
