// EventLoop: the one epoll thread for device back-ends (console input now; io_uring
// completions and tap/vsock sockets later). Runs until VmControl is stopping.
#pragma once

#include <sys/epoll.h>

#include <functional>
#include <map>
#include <memory>

#include "vmm/base/error.hpp"
#include "vmm/base/fd.hpp"
#include "vmm/vm_exit.hpp"

namespace kestrel {

class EventLoop {
public:
    using Callback = std::function<void(uint32_t events)>;

    static Result<EventLoop> create();
    Result<void> add(int fd, uint32_t events, Callback cb);
    Result<void> remove(int fd);
    // Dispatches events until ctl's wake fd fires.
    void run(VmControl& ctl);

private:
    explicit EventLoop(UniqueFd ep) : epoll_(std::move(ep)) {}
    UniqueFd epoll_;
    std::map<int, std::unique_ptr<Callback>> callbacks_;
};

}  // namespace kestrel
