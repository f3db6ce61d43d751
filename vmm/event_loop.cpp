#include "vmm/event_loop.hpp"

#include <sys/eventfd.h>
#include <unistd.h>

#include <array>

#include "vmm/base/log.hpp"
#include "vmm/seccomp/seccomp.hpp"

namespace kestrel {

Result<std::unique_ptr<EventLoop>> EventLoop::create() {
    UniqueFd ep(::epoll_create1(EPOLL_CLOEXEC));
    if (!ep) return fail_errno("epoll_create1");
    UniqueFd control(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    if (!control) return fail_errno("eventfd");
    return std::unique_ptr<EventLoop>(new EventLoop(std::move(ep), std::move(control)));
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
    seccomp::apply(seccomp::ThreadKind::EventLoop);
    epoll_event wake{};
    wake.events = EPOLLIN;
    wake.data.fd = ctl.wake_fd();
    ::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, ctl.wake_fd(), &wake);
    epoll_event control{};
    control.events = EPOLLIN;
    control.data.fd = control_.get();
    ::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, control_.get(), &control);
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
            if (fd == control_.get()) {
                on_control(ctl);
                continue;
            }
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

void EventLoop::on_control(VmControl& ctl) {
    uint64_t n;
    [[maybe_unused]] auto r = ::read(control_.get(), &n, sizeof n);
    std::function<Result<void>()> quiesce;
    {
        std::lock_guard lk(pause_mu_);
        if (!pause_requested_) return;  // withdrawn before the loop got to it
        quiesce = quiesce_;
    }
    auto q = quiesce ? quiesce() : Result<void>{};
    std::unique_lock lk(pause_mu_);
    if (!q) {
        pause_error_ = q.error();
        pause_requested_ = false;
        pause_cv_.notify_all();
        return;
    }
    parked_ = true;
    pause_cv_.notify_all();
    pause_cv_.wait(lk, [&] { return !pause_requested_ || ctl.stopping(); });
    parked_ = false;
}

Result<void> EventLoop::pause(std::function<Result<void>()> quiesce, std::chrono::milliseconds limit) {
    std::unique_lock lk(pause_mu_);
    pause_requested_ = true;
    parked_ = false;
    pause_error_.reset();
    quiesce_ = std::move(quiesce);
    uint64_t one = 1;
    if (::write(control_.get(), &one, sizeof one) != sizeof one) {
        pause_requested_ = false;
        return fail_errno("event loop: pause request");
    }
    bool done = pause_cv_.wait_for(lk, limit, [&] { return parked_ || pause_error_.has_value(); });
    if (pause_error_) return std::unexpected(*pause_error_);
    if (!done) {
        pause_requested_ = false;
        pause_cv_.notify_all();
        return fail("the event loop did not pause within {} ms (a device callback is still running)",
                    limit.count());
    }
    return {};
}

void EventLoop::resume() {
    {
        std::lock_guard lk(pause_mu_);
        pause_requested_ = false;
    }
    pause_cv_.notify_all();
}

}  // namespace kestrel
