#include "vmm/console_input.hpp"

#include <unistd.h>

#include <array>

#include "vmm/base/log.hpp"

namespace kestrel {

Result<void> ConsoleInput::start() {
    return loop_.add(fd_, EPOLLIN, [this](uint32_t) { on_readable(); });
}

void ConsoleInput::on_readable() {
    std::array<uint8_t, 256> buf;
    ssize_t n = ::read(fd_, buf.data(), buf.size());
    if (n <= 0) {
        if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
        std::lock_guard lk(mu_);
        closed_ = true;
        (void)loop_.remove(fd_);  // end of input: the guest keeps running
        return;
    }
    size_t len = static_cast<size_t>(n);
    size_t taken = uart_->enqueue_input(std::span<const uint8_t>(buf.data(), len));
    if (taken == len) return;
    std::lock_guard lk(mu_);
    pending_.assign(buf.begin() + static_cast<long>(taken), buf.begin() + n);
    paused_ = true;
    (void)loop_.remove(fd_);
}

void ConsoleInput::on_drained() {
    std::lock_guard lk(mu_);
    if (!paused_) return;
    size_t taken = uart_->enqueue_input(pending_);
    pending_.erase(pending_.begin(), pending_.begin() + static_cast<long>(taken));
    if (!pending_.empty() || closed_) return;
    paused_ = false;
    if (auto r = start(); !r) log::warn("console input: {}", r.error().what());
}

}  // namespace kestrel
