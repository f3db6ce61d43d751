// VirtioBlk: the virtio block device (virtio 1.2 §5.2) over a BlockFile, with one io_uring
// (UringBackend) per virtqueue.
//
// Data path, per queue, on the event-loop thread: queue_notify pops every available chain,
// validates it (parse_blk_request), answers bad ones at once and prepares the rest as SQEs;
// the whole batch goes to the kernel in one io_uring_submit. Completions arrive on the
// ring's eventfd (registered on the EventRegistry at activate): each CQE writes its status
// byte and puts the chain on the used ring; the queue interrupt is raised once per batch,
// when SplitQueue::should_notify() says the driver wants it.
//
// O_DIRECT: guest buffers that are not 512-byte aligned in address/length are bounced
// through an aligned host buffer (counted in metrics().bounced); aligned ones go straight
// from/to guest RAM.
//
// Reset / quiesce (§2.4): reset() marks every queue inactive (so late callbacks do nothing),
// removes the eventfds from the EventRegistry, then waits for every outstanding CQE of each
// ring (UringBackend::quiesce) and drops those completions without touching the used ring.
// Waiting, not cancelling: regular-file I/O cannot be cancelled once issued, and reads write
// straight into guest RAM, so the device must not return from reset while the kernel may
// still write into buffers the driver is about to reuse. Worst case is the host's I/O latency.
//
// Lifetimes: the GuestMemory, VirtioInterrupt and EventRegistry given to activate() must
// outlive the activation, i.e. until reset() (the destructor resets).
//
// Threads: config reads/writes, activate and reset come from vCPU threads; queue_notify and
// completion callbacks from the event loop. Each queue's state is behind its own mutex;
// interrupts are raised with no lock held (a transport may call reset() under its own lock,
// and take that lock again inside signal_queue).
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "devices/event_registry.hpp"
#include "devices/virtio/blk/blk_metrics.hpp"
#include "devices/virtio/blk/blk_request.hpp"
#include "devices/virtio/blk/blk_spec.hpp"
#include "devices/virtio/blk/block_file.hpp"
#include "devices/virtio/virtio_device.hpp"

namespace kestrel {

struct VirtioBlkOptions {
    std::string path;
    bool read_only = false;
    bool direct = false;         // O_DIRECT: bypass the host page cache
    std::string serial;          // GET_ID answer, at most 20 bytes
    uint16_t num_queues = 1;     // VIRTIO_BLK_F_MQ; the VMM passes its vCPU count
    uint16_t queue_size = 256;   // max queue size offered, power of 2
};

class VirtioBlk final : public VirtioDevice {
public:
    // One request's data: a cap well above what Linux sends (max_hw_sectors) that keeps
    // every transfer within an io_uring result (int32) and bounds a bounce buffer.
    static constexpr uint64_t kMaxDataBytes = 64ull << 20;
    // §5.2.4 limits we advertise. 4 KiB discard alignment matches the host file systems'
    // block size so punched holes really free space.
    static constexpr uint32_t kMaxDiscardSectors = 1u << 22;       // 2 GiB per request
    static constexpr uint32_t kMaxWriteZeroesSectors = 1u << 22;
    static constexpr uint32_t kDiscardSectorAlignment = 8;
    static constexpr uint16_t kMaxQueues = 64;  // bounded by MSI-X vectors a transport gives

    static Result<std::unique_ptr<VirtioBlk>> create(const VirtioBlkOptions& opts);
    ~VirtioBlk() override;

    uint16_t device_type() const override { return blk::kDeviceType; }
    uint64_t device_features() const override { return features_; }
    uint16_t num_queues() const override { return num_queues_; }
    uint16_t max_queue_size() const override { return queue_size_; }
    void read_config(uint64_t offset, std::span<uint8_t> data) override;
    void write_config(uint64_t offset, std::span<const uint8_t> data) override;
    Result<void> activate(ActivateContext ctx) override;
    void queue_notify(uint16_t index) override;
    void reset() override;
    bool needs_reset() const override;

    const BlkMetrics& metrics() const;
    const blk::Config& config() const { return config_; }
    uint64_t capacity_sectors() const { return config_.capacity; }

    struct QueueWorker;  // per-queue state, in virtio_blk.cpp
    struct Shared;       // state shared with in-flight callbacks

private:
    VirtioBlk(BlockFile file, const VirtioBlkOptions& opts);

    BlockFile file_;
    uint16_t num_queues_;
    uint16_t queue_size_;
    uint64_t features_;
    blk::Config config_{};
    std::shared_ptr<Shared> shared_;

    std::mutex mu_;  // guards workers_ and events_
    std::vector<std::shared_ptr<QueueWorker>> workers_;  // index = queue; null if not enabled
    EventRegistry* events_ = nullptr;
};

}  // namespace kestrel
