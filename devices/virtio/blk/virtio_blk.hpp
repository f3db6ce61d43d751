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
// through the queue's bounce pool (counted in metrics().bounced); aligned ones go straight
// from/to guest RAM.
//
// Host memory budget, per queue, whatever the guest does (every figure is a cap; nothing is
// allocated per request beyond it):
//  - bounce pool (`direct` disks only): kBouncePoolBytes = 4 MiB, mapped on the first
//    misaligned request and kept until reset. It holds the largest request a driver may send
//    (§5.2.4: seg_max x size_max = 254 x 16 KiB, kMaxDataBytes), so an idle pool takes any
//    request whole; a request that does not fit while others hold the pool waits, popped
//    but not started, and the queue stops popping behind it until completions free room
//    (counted in metrics().budget_waits). Before, each misaligned request allocated its own
//    buffer of up to 64 MiB, 256 of them in flight per queue, all of which a guest could
//    point at one page of its own memory: ~16 GiB per queue.
//  - request bookkeeping: the copied descriptors of in-flight chains (DescriptorChain, 16 B
//    each, up to 4352 per chain with indirect tables) and the iovecs handed to io_uring
//    (16 B each). A queue holds at most kMaxHeldDescriptors descriptors of in-flight
//    chains plus the one waiting chain: a chain that would go past it waits like a bounced
//    one (never when nothing is in flight, so a lone chain always runs). With the slots,
//    the ring and iovec arrays kept for reuse (UringBackend::kRetainedIovecs) this is
//    under 1.5 MiB per queue.
//  - UringBackend's write-zeroes fallback buffer, 1 MiB, only on file systems without
//    FALLOC_FL_ZERO_RANGE.
// So a device costs at most num_queues x 6.5 MiB beyond its rings, whatever the guest sends.
//
// Reset / quiesce (§2.4): reset() marks every queue inactive (so late callbacks do nothing),
// asks every ring to cancel its requests (UringBackend::start_quiesce), removes the ring fds
// from the EventRegistry, then waits for the outstanding requests and drops their completions
// without touching the used ring. Regular-file I/O under way cannot be cancelled, and reads
// write straight into guest RAM, so a normal reset waits for it — but at most kResetLimit
// (2 s) for all queues together, so that a hung backing store (a FUSE daemon or NFS server
// that never answers) cannot hang the vCPU that resets the device, or kestrel's exit.
// When the limit passes with requests still in the kernel, the device gives up on them:
//  - their queue is parked whole (ring, slots, bounce pool), never freed while they run:
//    their late completions are dropped and never reach the old used ring or status bytes,
//    and the kernel never writes into freed host memory;
//  - but a late read may still write into the guest RAM it was given, which the driver
//    may have reused by then. Nothing in a VMM can stop that; so the device warns once per
//    such reset (metrics().stuck_resets) and refuses the next activation (the transport
//    then sets DEVICE_NEEDS_RESET, §2.1.2) while any parked request is still in the kernel,
//    so a driver cannot start new I/O into its buffers. Each activation and reset looks again;
//    once they have drained the device works as before. Reset itself still completes
//    (device status reads 0, which a driver polls for; Linux's vp_reset waits forever).
//  - at destruction (kestrel's exit) the parked queues are leaked, not freed.
//
// Rate limiting (devices/rate_limiter.hpp, Firecracker's model): one limiter per device,
// shared by its queues; every I/O request takes one op and, for reads and writes, its data
// bytes before it is submitted. A request the limiter refuses is held (popped, not started)
// and its queue stops popping; the limiter's timerfd, on the EventRegistry while the device
// is active, resumes every queue holding one. GET_ID and requests answered with an error
// at once do no host I/O and are not limited.
//
// Image swap (PATCH /drives path_on_host while the guest runs, replace_file): the new
// BlockFile is opened and locked by the caller before anything changes. The device then stops
// every queue (their locks: no request is popped or completed meanwhile), lets the requests
// already in the host kernel finish against the old image and completes them to the guest
// (bounded by `limit`; past it the swap is refused and nothing changed), points every ring at
// the new file, and updates the capacity in the config space. Requests the device had not
// started (still in the avail ring, or popped but waiting for room in the budget) go to the
// new image. The caller then raises the config-change interrupt (virtio 1.2 §5.2.2: the
// driver re-reads capacity). The read-only and direct modes stay what they were: the
// features the driver accepted (VIRTIO_BLK_F_RO, DISCARD, WRITE_ZEROES) cannot change.
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
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "devices/event_registry.hpp"
#include "devices/rate_limiter.hpp"
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
    bool lock_image = true;      // false: a migration destination locks it later (lock_image())
};

class VirtioBlk final : public VirtioDevice {
public:
    // §5.2.4 size_max and the largest seg_max (at queue size 256): a driver's request has at
    // most seg_max segments of at most size_max bytes, so kMaxDataBytes = 254 x 16 KiB is the
    // longest one it may send; longer ones get IOERR (bad_length). 3.97 MiB is above what
    // Linux sends by default (max_sectors_kb 1280) and lets one bounce pool per queue hold
    // any request whole. (Before: no size_max, so no limit a driver could see, and an
    // invisible 64 MiB cap.)
    static constexpr uint32_t kSizeMax = 16 << 10;
    static constexpr uint32_t kMaxSegMax = 254;
    static constexpr uint64_t kMaxDataBytes = uint64_t{kMaxSegMax} * kSizeMax;
    // Host memory budget, per queue: see the header comment.
    static constexpr uint64_t kBouncePoolBytes = 4 << 20;
    static_assert(kBouncePoolBytes >= kMaxDataBytes, "the pool must hold the largest request");
    static constexpr uint32_t kMaxHeldDescriptors = 16384;
    // How long reset() waits for in-flight host I/O (all queues together) before it parks it.
    static constexpr std::chrono::milliseconds kResetLimit{2000};
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
    // Pause: every queue's requests in host I/O complete in the kernel (data is in guest RAM);
    // their completions wait in the rings for the event loop to run again.
    Result<void> finish_host_io(std::chrono::milliseconds limit) override;
    // Completes what finish_host_io finished to the used rings (bounded by kSwapLimit for a
    // short transfer it resubmits); a request waiting for budget or the limiter is handed back.
    Result<QueuePositions> settle_queues() override;

    const BlkMetrics& metrics() const;
    void visit_metrics(MetricVisitor& v) const override {
        metrics().visit(v);
        limiter_->visit_metrics(v, "rate_limiter");
    }
    // Limits set at configuration and by PATCH /drives at run time (any thread).
    RateLimiter& rate_limiter() const { return *limiter_; }
    const blk::Config& config() const { return config_; }
    uint64_t capacity_sectors() const {
        std::lock_guard lk(config_mu_);
        return config_.capacity;
    }
    const std::string& path() const { return file_.path(); }
    // Live migration hands the image over between two kestrels: the source writes what it
    // has to the image (fsync) and drops its lock, the destination takes it (refused while
    // someone else holds it); a failed migration takes the source's back.
    Result<void> sync_and_unlock_image();
    Result<void> lock_image();

    // How long replace_file() lets requests under way finish before it gives up.
    static constexpr std::chrono::milliseconds kSwapLimit{2000};
    // Serves the disk from `file` from now on (see the header comment). On failure the old
    // image stays. `file` must be opened read-only/direct as the current one is.
    Result<void> replace_file(BlockFile file, std::chrono::milliseconds limit = kSwapLimit);
    // The image was resized in place: re-reads its size into the capacity (the caller raises
    // the config-change interrupt). On failure the old capacity stays.
    Result<void> refresh_capacity();

    struct QueueWorker;  // per-queue state, in virtio_blk.cpp
    struct Shared;       // state shared with in-flight callbacks

private:
    VirtioBlk(BlockFile file, std::shared_ptr<RateLimiter> limiter, const VirtioBlkOptions& opts);
    // The limiter's timer: the queues it held up try again.
    void on_limiter_timer();

    BlockFile file_;
    uint16_t num_queues_;
    uint16_t queue_size_;
    uint64_t features_;
    blk::Config config_{};
    std::shared_ptr<Shared> shared_;
    std::shared_ptr<RateLimiter> limiter_;  // also in shared_, for the queues

    // Drops parked queues whose requests have finished; true when none is left. mu_ held.
    bool drain_parked_locked();

    // Before mu_: an activation builds every ring on one file, never half on a swapped one.
    std::mutex file_mu_;
    mutable std::mutex config_mu_;  // config_.capacity changes under a running guest
    std::mutex mu_;  // guards workers_, parked_ and events_
    std::vector<std::shared_ptr<QueueWorker>> workers_;  // index = queue; null if not enabled
    // Queues a reset gave up on: requests still in the host kernel (see the header comment).
    std::vector<std::shared_ptr<QueueWorker>> parked_;
    EventRegistry* events_ = nullptr;
};

}  // namespace kestrel
