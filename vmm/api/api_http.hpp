// configure_http: kestrel's routes and answers on a cpp-httplib server. Every request goes
// through parse_api_request and then `call` (the controller's answer); whatever httplib
// refuses itself (a malformed request, an unknown method, a body over kMaxBodyBytes) gets the
// same 400 + {"fault_message"} answer as a request the parser refuses; payload bound and
// timeouts are set here. ApiServer serves with it on the unix socket; the HTTP fuzz target
// (tests/fuzz/fuzz_api_http.cpp) drives the same server over an in-memory stream.
#pragma once

#include <functional>

#include "vmm/api/api_request.hpp"

namespace httplib {
class Server;
}

namespace kestrel::api {

void configure_http(httplib::Server& svr, std::function<ApiResponse(ApiRequest)> call);

}  // namespace kestrel::api
