// ApiServer: kestrel's HTTP API on a unix socket (cpp-httplib), in its own thread with one
// worker, so requests are handled one at a time and a slow or vanished client holds only
// this thread (read/write and keep-alive timeouts bound it, kIoTimeoutSeconds). Each request
// is parsed here (parse_api_request) and answered by the controller through RequestQueue;
// whatever httplib refuses itself (an unknown method, a body over kMaxBodyBytes) gets the
// same 400 + {"fault_message"} answer as a request the parser refuses.
#pragma once

#include <pthread.h>

#include <chrono>
#include <memory>
#include <string>

#include "vmm/api/request_queue.hpp"

namespace httplib {
class Server;
}

namespace kestrel::api {

class ApiServer {
public:
    // Binds `socket_path` now (an error names it: in use, a leftover file, no directory) and
    // serves from a thread. A stale socket nobody listens on is replaced.
    // The queue is shared: a worker still held by a client when kestrel exits keeps it.
    static Result<std::unique_ptr<ApiServer>> start(const std::string& socket_path,
                                                    std::shared_ptr<RequestQueue> queue);
    // Stops serving and removes the socket file. Waits at most kStopLimit for the API thread:
    // a client holding the worker (connected, silent or idle between keep-alive requests)
    // would otherwise hold kestrel's exit for up to kIoTimeoutSeconds; such a thread is left
    // to the process's exit, with the server it uses.
    ~ApiServer();

    static constexpr time_t kIoTimeoutSeconds = 5;
    static constexpr std::chrono::milliseconds kStopLimit{200};

private:
    ApiServer(std::string path, std::unique_ptr<httplib::Server> svr);
    std::string path_;
    std::unique_ptr<httplib::Server> svr_;
    pthread_t thread_{};  // a pthread, not std::thread, for the timed join
    bool thread_started_ = false;
};

}  // namespace kestrel::api
