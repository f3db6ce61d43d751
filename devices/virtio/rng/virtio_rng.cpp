#include "devices/virtio/rng/virtio_rng.hpp"

#include <sys/epoll.h>
#include <sys/random.h>

#include <algorithm>
#include <cerrno>

#include "devices/event_registry.hpp"
#include "devices/virtio/queue/virtq_spec.hpp"
#include "vmm/base/log.hpp"

namespace kestrel {

Result<void> VirtioRng::getrandom_fill(std::span<uint8_t> out) {
    while (!out.empty()) {
        ssize_t n = ::getrandom(out.data(), out.size(), 0);
        if (n < 0) {
            if (errno == EINTR) continue;  // requests > 256 bytes can be interrupted
            return fail_errno("getrandom");
        }
        out = out.subspan(static_cast<size_t>(n));
    }
    return {};
}

VirtioRng::VirtioRng(EntropySource source, std::unique_ptr<RateLimiter> limiter)
    : source_(std::move(source)), limiter_(std::move(limiter)) {}

uint64_t VirtioRng::device_features() const {
    return virtq::kFeatureVersion1 | virtq::kFeatureEventIdx | virtq::kFeatureIndirectDesc;
}

void VirtioRng::read_config(uint64_t, std::span<uint8_t> data) {
    std::fill(data.begin(), data.end(), uint8_t{0});
}

void VirtioRng::write_config(uint64_t, std::span<const uint8_t>) {}

Result<void> VirtioRng::activate(ActivateContext ctx) {
    std::lock_guard lock(mu_);
    if (ctx.queues.size() != 1)
        return fail("virtio-rng: {} queues configured, expected 1", ctx.queues.size());
    auto q = SplitQueue::create(ctx.mem, ctx.queues[0], kQueueSize, ctx.acked_features);
    if (!q) return std::unexpected(context(std::move(q).error(), "virtio-rng requestq"));
    if (limiter_) {
        if (auto r = ctx.events.add(limiter_->timer_fd(), EPOLLIN, [this](uint32_t) { on_limiter_timer(); }); !r)
            return std::unexpected(context(r.error(), "virtio-rng rate limiter"));
        events_ = &ctx.events;
    }
    queue_ = std::move(*q);
    mem_ = &ctx.mem;
    interrupt_ = &ctx.interrupt;
    needs_reset_ = false;
    return {};
}

void VirtioRng::on_limiter_timer() {
    limiter_->on_timer();
    std::lock_guard lock(mu_);
    if (queue_ && !needs_reset_ && throttled_) process_locked();
}

uint32_t VirtioRng::fill(const DescriptorChain& chain) {
    uint64_t want = std::min<uint64_t>(chain.writable_bytes(), kMaxBytesPerRequest);
    auto iov = chain.writable_iovecs(*mem_, 0, want);
    if (!iov) {
        // Validated at pop time and guest RAM does not move, so this is a host-side bug.
        log::warn("virtio-rng: chain {}: {}", chain.head(), iov.error().what());
        return 0;
    }
    uint32_t written = 0;
    for (const iovec& v : *iov) {
        auto r = source_(std::span(static_cast<uint8_t*>(v.iov_base), v.iov_len));
        if (!r) {
            add_metric(metrics_.entropy_errors, 1);
            log::warn("virtio-rng: entropy source failed: {}", r.error().what());
            break;
        }
        written += static_cast<uint32_t>(v.iov_len);  // <= kMaxBytesPerRequest in total
    }
    return written;
}

void VirtioRng::queue_notify(uint16_t index) {
    std::lock_guard lock(mu_);
    if (index != 0) {
        log::debug("virtio-rng: notify for non-existent queue {}", index);
        return;
    }
    if (!queue_ || needs_reset_) return;
    process_locked();
}

void VirtioRng::process_locked() {
    bool used_any = false;
    auto complete = [&](uint16_t head, uint32_t len) {
        if (auto r = queue_->add_used(*mem_, head, len); !r) {
            add_metric(metrics_.queue_errors, 1);
            log::warn("virtio-rng: {}", r.error().what());
            needs_reset_ = true;
            return;
        }
        used_any = true;
    };
    while (!needs_reset_) {
        std::optional<DescriptorChain> chain;
        if (throttled_) {
            chain.swap(throttled_);
        } else {
            auto popped = queue_->pop(*mem_);
            if (!popped) {
                add_metric(metrics_.queue_errors, 1);
                log::warn("virtio-rng: requestq broken, device needs reset: {}",
                          popped.error().what());
                needs_reset_ = true;
                break;
            }
            if (!popped->has_value()) break;
            if (auto* bad = std::get_if<MalformedChain>(&**popped)) {
                add_metric(metrics_.malformed_chains, 1);
                log::debug("virtio-rng: malformed chain {}: {}", bad->head, bad->error.what());
                complete(bad->head, 0);
                continue;
            }
            chain.emplace(std::move(std::get<DescriptorChain>(**popped)));
        }
        if (limiter_ && !limiter_->consume(1, std::min<uint64_t>(chain->writable_bytes(), kMaxBytesPerRequest))) {
            throttled_.swap(chain);  // the limiter's timer comes back for it
            break;
        }
        uint32_t n = fill(*chain);
        add_metric(metrics_.requests, 1);
        add_metric(metrics_.bytes, n);
        complete(chain->head(), n);
    }
    // Completions already published still deserve their notification, even if the queue
    // broke afterwards.
    if (!used_any) return;
    auto notify = queue_->should_notify(*mem_);
    if (!notify || *notify) {
        add_metric(metrics_.interrupts, 1);
        interrupt_->signal_queue(0);
    }
}

void VirtioRng::reset() {
    EventRegistry* events;
    {
        std::lock_guard lock(mu_);
        queue_.reset();
        throttled_.reset();
        mem_ = nullptr;
        interrupt_ = nullptr;
        needs_reset_ = false;
        events = std::exchange(events_, nullptr);
    }
    // Outside the lock: a registry may wait for a running timer callback, which takes it.
    if (events) (void)events->remove(limiter_->timer_fd());
}

Result<QueuePositions> VirtioRng::settle_queues() {
    std::lock_guard lock(mu_);
    if (!queue_) return QueuePositions{std::nullopt};
    // Requests are served whole as they are popped; only one the limiter refused waits.
    auto pos = queue_->position(throttled_ ? 1 : 0);
    if (!pos) return std::unexpected(context(pos.error(), "virtio-rng requestq"));
    return QueuePositions{*pos};
}

bool VirtioRng::needs_reset() const {
    std::lock_guard lock(mu_);
    return needs_reset_;
}

}  // namespace kestrel
