// VirtioRng: the virtio entropy device (virtio 1.2 §5.4). One request queue, no device
// configuration, no device-specific feature bits. Every chain the driver offers gets its
// device-writable part filled with bytes from the host's getrandom() (or a test source).
// With a rate limiter (PUT /entropy's rate_limiter): one op and the bytes it will get per
// request; a refused request is held, the queue stops, and the limiter's timerfd (on the
// EventRegistry while active) resumes it.
#pragma once

#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <span>

#include "devices/rate_limiter.hpp"
#include "devices/virtio/queue/split_queue.hpp"
#include "devices/virtio/rng/rng_metrics.hpp"
#include "devices/virtio/virtio_device.hpp"

namespace kestrel {

class VirtioRng final : public VirtioDevice {
public:
    // Fills the whole span or fails.
    using EntropySource = std::function<Result<void>(std::span<uint8_t>)>;

    static constexpr uint16_t kDeviceType = 4;  // virtio 1.2 §5 device ID table
    static constexpr uint16_t kQueueSize = 256;
    // Per-request cap: Linux asks for at most a few hundred bytes (hwrng reads of
    // RNG_BUFFER_SIZE) and §5.4.6.1 lets the device use less than the whole buffer, so a
    // huge buffer cannot make the event-loop thread spend long in getrandom().
    static constexpr uint32_t kMaxBytesPerRequest = 64 * 1024;

    // getrandom(2) from the host's urandom pool (never blocks once the pool is initialised).
    static Result<void> getrandom_fill(std::span<uint8_t> out);

    // `limiter`: null for none.
    explicit VirtioRng(EntropySource source = getrandom_fill, std::unique_ptr<RateLimiter> limiter = nullptr);

    uint16_t device_type() const override { return kDeviceType; }
    uint64_t device_features() const override;
    uint16_t num_queues() const override { return 1; }
    uint16_t max_queue_size() const override { return kQueueSize; }
    // §5.4.4: no device configuration layout; reads are 0, writes ignored.
    void read_config(uint64_t offset, std::span<uint8_t> data) override;
    void write_config(uint64_t offset, std::span<const uint8_t> data) override;
    Result<void> activate(ActivateContext ctx) override;
    void queue_notify(uint16_t index) override;
    void reset() override;
    bool needs_reset() const override;
    Result<QueuePositions> settle_queues() override;

    const RngMetrics& metrics() const { return metrics_; }
    void visit_metrics(MetricVisitor& v) const override {
        metrics().visit(v);
        if (limiter_) limiter_->visit_metrics(v, "rate_limiter");
    }
    RateLimiter* rate_limiter() const { return limiter_.get(); }

private:
    // Fills the writable part of one chain (up to the cap); returns the bytes written.
    uint32_t fill(const DescriptorChain& chain);
    void process_locked();
    void on_limiter_timer();

    EntropySource source_;
    RngMetrics metrics_;
    mutable std::mutex mu_;  // activate/reset (vCPU threads) vs queue_notify (event loop)
    GuestMemory* mem_ = nullptr;
    VirtioInterrupt* interrupt_ = nullptr;
    std::optional<SplitQueue> queue_;
    bool needs_reset_ = false;
    std::unique_ptr<RateLimiter> limiter_;
    EventRegistry* events_ = nullptr;          // while active with a limiter
    std::optional<DescriptorChain> throttled_;  // refused by the limiter: served first
};

}  // namespace kestrel
