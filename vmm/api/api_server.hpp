// ApiServer: kestrel's HTTP API on a unix socket (cpp-httplib), in its own thread with one
// worker, so requests are handled one at a time and a slow or vanished client holds only
// this thread (read/write timeouts bound it). Each request is parsed here
// (parse_api_request) and answered by the controller through RequestQueue.
#pragma once

#include <memory>
#include <string>
#include <thread>

#include "vmm/api/request_queue.hpp"

namespace httplib {
class Server;
}

namespace kestrel::api {

class ApiServer {
public:
    // Binds `socket_path` now (an error names it: in use, a leftover file, no directory) and
    // serves from a thread. A stale socket nobody listens on is replaced.
    static Result<std::unique_ptr<ApiServer>> start(const std::string& socket_path, RequestQueue& queue);
    ~ApiServer();  // stops serving, joins, removes the socket file

private:
    ApiServer(std::string path, std::unique_ptr<httplib::Server> svr);
    std::string path_;
    std::unique_ptr<httplib::Server> svr_;
    std::thread thread_;
};

}  // namespace kestrel::api
