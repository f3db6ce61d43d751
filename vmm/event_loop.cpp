#include "vmm/event_loop.hpp"

#include <array>

#include "vmm/base/log.hpp"

namespace kestrel {

Result<std::unique_ptr<EventLoop>> EventLoop::create() {
    int fd = ::epoll_create1(EPOLL_CLOEXEC);
    if (fd < 0) return fail_errno("epoll_create1");
    return std::unique_ptr<EventLoop>(new EventLoop(UniqueFd(fd)));
}

Result<void> EventLoop::add(int fd, uint32_t events, Callback cb) {
    std::lock_guard lk(mu_);
    epoll_event ev{};
    ev.events = events;
    ev.data.fd = fd;
    if (::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, fd, &ev) < 0)
        return fail_errno("epoll_ctl add fd {}", fd);
    callbacks_[fd] = std::make_shared<Callback>(std::move(cb));
    return {};
}

Result<void> EventLoop::remove(int fd) {
    std::lock_guard lk(mu_);
    callbacks_.erase(fd);
    if (::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, fd, nullptr) < 0)
        return fail_errno("epoll_ctl del fd {}", fd);
    return {};
}

void EventLoop::run(VmControl& ctl) {
    epoll_event wake{};
    wake.events = EPOLLIN;
    wake.data.fd = ctl.wake_fd();
    ::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, ctl.wake_fd(), &wake);
    std::array<epoll_event, 32> evs;
    while (!ctl.stopping()) {
        int n = ::epoll_wait(epoll_.get(), evs.data(), static_cast<int>(evs.size()), -1);
        if (n < 0) {
            if (errno == EINTR) continue;
            ctl.request({ExitKind::Error, 0, fmt::format("epoll_wait: {}", std::strerror(errno))});
            return;
        }
        for (int i = 0; i < n; ++i) {
            int fd = evs[static_cast<size_t>(i)].data.fd;
            if (fd == ctl.wake_fd()) return;
            std::shared_ptr<Callback> cb;
            {
                std::lock_guard lk(mu_);
                auto it = callbacks_.find(fd);
                if (it != callbacks_.end()) cb = it->second;
            }
            if (cb) (*cb)(evs[static_cast<size_t>(i)].events);
        }
    }
}

}  // namespace kestrel
