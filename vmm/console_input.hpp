// ConsoleInput: feeds a terminal on stdin into the guest UART without losing bytes. When the
// UART's buffer is full, stdin leaves the event loop until the guest has drained it, so a
// large paste arrives whole instead of being cut at the UART's backlog.
#pragma once

#include <memory>
#include <mutex>
#include <vector>

#include "devices/legacy/uart16550.hpp"
#include "vmm/event_loop.hpp"

namespace kestrel {

class ConsoleInput {
public:
    ConsoleInput(EventLoop& loop, int fd) : loop_(loop), fd_(fd) {}
    void attach(std::shared_ptr<Uart16550> uart) { uart_ = std::move(uart); }
    Result<void> start();
    // The UART's on_rx_drained hook (vCPU thread).
    void on_drained();

private:
    void on_readable();

    EventLoop& loop_;
    int fd_;
    std::shared_ptr<Uart16550> uart_;
    std::mutex mu_;
    std::vector<uint8_t> pending_;
    bool paused_ = false;
    bool closed_ = false;
};

}  // namespace kestrel
