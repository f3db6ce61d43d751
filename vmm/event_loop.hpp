// EventLoop: the one epoll thread for device back-ends (console input now; io_uring
// completions and tap/vsock sockets later). Runs until VmControl is stopping.
#pragma once

#include <sys/epoll.h>

#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>

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

    // Parks the loop thread between two callbacks until resume(), so no device callback runs
    // (no completion, frame or byte reaches guest memory) while the VM is paused. `quiesce`
    // runs on the loop thread first: devices finish the host I/O that writes into guest
    // memory and keep its completions for after the pause. Fails if quiesce fails or the
    // loop has not parked within `limit` (the pause is then withdrawn).
    Result<void> pause(std::function<Result<void>()> quiesce, std::chrono::milliseconds limit);
    void resume();

private:
    EventLoop(UniqueFd ep, UniqueFd control) : epoll_(std::move(ep)), control_(std::move(control)) {}
    void on_control(VmControl& ctl);

    UniqueFd epoll_;
    UniqueFd control_;  // eventfd: a pause request waits
    std::mutex mu_;
    std::map<int, std::shared_ptr<Callback>> callbacks_;

    std::mutex pause_mu_;
    std::condition_variable pause_cv_;
    bool pause_requested_ = false;  // all under pause_mu_
    bool parked_ = false;
    std::optional<Error> pause_error_;
    std::function<Result<void>()> quiesce_;
};

}  // namespace kestrel
