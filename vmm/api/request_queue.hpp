// RequestQueue: how parsed API requests reach the controller (the VMM thread) and how its
// answers come back, as in Firecracker's rpc_interface.rs: the API thread posts a request
// and blocks on its own promise; the controller is woken through an eventfd in its epoll
// set, takes everything queued and answers each in order. The API thread never touches the
// VM, guest memory or a device.
#pragma once

#include <sys/eventfd.h>
#include <unistd.h>

#include <deque>
#include <future>
#include <mutex>
#include <vector>

#include "vmm/api/api_request.hpp"
#include "vmm/base/fd.hpp"

namespace kestrel::api {

class RequestQueue {
public:
    struct Item {
        ApiRequest request;
        std::promise<ApiResponse> answer;
    };

    static Result<std::unique_ptr<RequestQueue>> create() {
        UniqueFd fd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
        if (!fd) return fail_errno("eventfd for the API queue");
        return std::unique_ptr<RequestQueue>(new RequestQueue(std::move(fd)));
    }

    // API thread: hands the request over and waits for the controller's answer.
    ApiResponse call(ApiRequest r) {
        std::future<ApiResponse> f;
        {
            std::lock_guard lk(mu_);
            if (closed_) return fault(Error{"kestrel is shutting down", 0, ErrorKind::NotAllowed});
            items_.push_back(Item{std::move(r), {}});
            f = items_.back().answer.get_future();
        }
        uint64_t one = 1;
        [[maybe_unused]] auto n = ::write(fd_.get(), &one, sizeof one);
        return f.get();
    }

    // Controller: readable when requests wait.
    int fd() const { return fd_.get(); }
    std::vector<Item> take() {
        uint64_t n;
        [[maybe_unused]] auto r = ::read(fd_.get(), &n, sizeof n);
        std::lock_guard lk(mu_);
        std::vector<Item> out(std::make_move_iterator(items_.begin()), std::make_move_iterator(items_.end()));
        items_.clear();
        return out;
    }
    // Controller, on its way out: answers what is left and refuses what comes later.
    void close() {
        std::lock_guard lk(mu_);
        closed_ = true;
        for (auto& i : items_) i.answer.set_value(fault(Error{"kestrel is shutting down", 0, ErrorKind::NotAllowed}));
        items_.clear();
    }

private:
    explicit RequestQueue(UniqueFd fd) : fd_(std::move(fd)) {}
    UniqueFd fd_;
    std::mutex mu_;
    std::deque<Item> items_;
    bool closed_ = false;
};

}  // namespace kestrel::api
