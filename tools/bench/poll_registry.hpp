// What the device benchmarks use in place of the VMM: a poll(2)-driven EventRegistry and a
// VirtioInterrupt that counts. Header-only; benchmarks are single-threaded.
#pragma once

#include <poll.h>
#include <sys/epoll.h>

#include <cstdint>
#include <map>
#include <vector>

#include "devices/event_registry.hpp"
#include "devices/virtio/virtio_device.hpp"

namespace kestrel::bench {

class PollRegistry final : public EventRegistry {
public:
    Result<void> add(int fd, uint32_t, Callback cb) override {
        cbs_[fd] = std::move(cb);
        return {};
    }
    Result<void> remove(int fd) override {
        cbs_.erase(fd);
        return {};
    }
    // One round: waits up to timeout_ms, runs the callback of every readable fd.
    void dispatch(int timeout_ms) {
        std::vector<pollfd> fds;
        for (auto& [fd, cb] : cbs_) fds.push_back(pollfd{fd, POLLIN, 0});
        if (::poll(fds.data(), fds.size(), timeout_ms) <= 0) return;
        for (auto& p : fds)
            if ((p.revents & POLLIN) && cbs_.count(p.fd)) cbs_[p.fd](EPOLLIN);
    }

private:
    std::map<int, Callback> cbs_;
};

class CountingInterrupt final : public VirtioInterrupt {
public:
    void signal_queue(uint16_t) override { ++count; }
    void signal_config() override {}
    uint64_t count = 0;
};

}  // namespace kestrel::bench
