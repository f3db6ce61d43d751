// EventRegistry: how a device back-end asks the VMM's event loop to watch an fd (io_uring
// completion eventfds, taps, sockets, ioeventfds). Callbacks run on the event-loop thread.
// add/remove may be called from any thread.
#pragma once

#include <cstdint>
#include <functional>

#include "vmm/base/error.hpp"

namespace kestrel {

class EventRegistry {
public:
    using Callback = std::function<void(uint32_t epoll_events)>;
    virtual ~EventRegistry() = default;
    virtual Result<void> add(int fd, uint32_t epoll_events, Callback cb) = 0;
    virtual Result<void> remove(int fd) = 0;
};

}  // namespace kestrel
