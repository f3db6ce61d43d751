// EventLoop: the one epoll thread for device back-ends (console input now; io_uring
// completions and tap/vsock sockets later). Runs until VmControl is stopping.
#pragma once

#include <sys/epoll.h>

#include <functional>
#include <map>
#include <memory>
#include <mutex>

#include "devices/event_registry.hpp"

#include "vmm/base/error.hpp"
#include "vmm/base/fd.hpp"
#include "vmm/vm_exit.hpp"

namespace kestrel {

class EventLoop final : public EventRegistry {
public:
    static Result<std::unique_ptr<EventLoop>> create();
    // Safe from any thread; a callback may remove its own fd.
    Result<void> add(int fd, uint32_t events, Callback cb) override;
    Result<void> remove(int fd) override;
    // Dispatches events until ctl's wake fd fires.
    void run(VmControl& ctl);

private:
    explicit EventLoop(UniqueFd ep) : epoll_(std::move(ep)) {}
    UniqueFd epoll_;
    std::mutex mu_;
    std::map<int, std::shared_ptr<Callback>> callbacks_;
};

}  // namespace kestrel
