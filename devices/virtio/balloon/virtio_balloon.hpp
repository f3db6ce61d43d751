// VirtioBalloon: the traditional memory balloon (virtio 1.2 §5.5) with free page reporting
// (§5.5.6.7). The host sets a target (num_pages, 4 KiB balloon pages); the driver inflates
// towards it by giving pages on the inflateq (arrays of le32 page frame numbers), and takes
// them back on the deflateq. With VIRTIO_BALLOON_F_PAGE_REPORTING, the driver also reports
// ranges of its free memory on the reporting queue (Linux: blocks of 2 MiB and more, a
// couple of seconds after they became free). Inflated pages and reported ranges are given
// back to the host (GuestMemory::discard, MADV_DONTNEED): a VM's host memory then follows
// what its guest uses instead of the most it ever touched.
//
// Queues (§5.5.2): 0 inflateq, 1 deflateq, then the reporting queue. statsq and
// free_page_vq are not offered, and Linux (and QEMU) number only the queues that exist, so
// the reporting queue is queue 2.
// Not offered: VIRTIO_BALLOON_F_MUST_TELL_HOST (deflated pages need no host action),
// STATS_VQ, FREE_PAGE_HINT, PAGE_POISON (Linux then turns page reporting off itself when
// its free pages must keep a poison value or zeros: init_on_free, page_poison=1).
// Every PFN and range comes from the guest: each is checked against guest RAM by
// GuestMemory::discard; bad ones are counted and skipped, and their buffers still returned.
#pragma once

#include <cstdint>
#include <mutex>
#include <optional>
#include <span>

#include "devices/metrics.hpp"
#include "devices/virtio/queue/split_queue.hpp"
#include "devices/virtio/virtio_device.hpp"

namespace kestrel {

struct BalloonMetrics {
    std::atomic<uint64_t> inflated_pages{0};   // 4 KiB pages given back to the host on inflate
    std::atomic<uint64_t> deflated_pages{0};   // pages the driver took back
    std::atomic<uint64_t> reports{0};          // reporting-queue chains handled
    std::atomic<uint64_t> reported_bytes{0};   // free memory given back to the host
    std::atomic<uint64_t> bad_ranges{0};       // PFNs or ranges outside RAM or unaligned: skipped
    std::atomic<uint64_t> malformed_chains{0};  // refused by chain validation, returned unused
    std::atomic<uint64_t> queue_errors{0};     // a queue broke (device needs reset)
    std::atomic<uint64_t> interrupts{0};       // used-buffer notifications sent

    void visit(MetricVisitor& v) const {
        v.counter("inflated_pages", load_metric(inflated_pages), "4 KiB pages given back to the host on inflate");
        v.counter("deflated_pages", load_metric(deflated_pages), "pages the driver took back on deflate");
        v.counter("reports", load_metric(reports), "free page reports handled");
        v.counter("reported_bytes", load_metric(reported_bytes), "free guest memory given back to the host");
        v.counter("bad_ranges", load_metric(bad_ranges), "PFNs or ranges outside guest RAM or unaligned, skipped");
        v.counter("malformed_chains", load_metric(malformed_chains), "refused by chain validation");
        v.counter("queue_errors", load_metric(queue_errors), "a queue broke (device needs reset)");
        v.counter("interrupts", load_metric(interrupts), "used-buffer notifications sent");
    }
};

struct BalloonOptions {
    uint32_t target_pages = 0;      // num_pages: 4 KiB pages the host wants the guest to give
    bool deflate_on_oom = false;    // VIRTIO_BALLOON_F_DEFLATE_ON_OOM
    bool free_page_reporting = false;
};

class VirtioBalloon final : public VirtioDevice {
public:
    static constexpr uint16_t kDeviceType = 5;  // virtio 1.2 §5 device ID table
    static constexpr uint16_t kQueueSize = 256;
    static constexpr uint64_t kPageBytes = 4096;  // §5.5.6: balloon pages are 4 KiB
    static constexpr uint64_t kFeatureDeflateOnOom = 1ull << 2;
    static constexpr uint64_t kFeaturePageReporting = 1ull << 5;
    // An inflate/deflate chain is read in pieces of this many PFNs (Linux sends at most 256
    // per request); longer chains are read piece by piece, never copied whole.
    static constexpr size_t kPfnChunk = 1024;

    explicit VirtioBalloon(BalloonOptions o) : opts_(o) {}

    uint16_t device_type() const override { return kDeviceType; }
    uint64_t device_features() const override;
    uint16_t num_queues() const override { return opts_.free_page_reporting ? 3 : 2; }
    uint16_t max_queue_size() const override { return kQueueSize; }
    // §5.5.4: le32 num_pages (device-set), le32 actual (driver-set); the rest reads 0.
    void read_config(uint64_t offset, std::span<uint8_t> data) override;
    void write_config(uint64_t offset, std::span<const uint8_t> data) override;
    Result<void> activate(ActivateContext ctx) override;
    void queue_notify(uint16_t index) override;
    void reset() override;
    bool needs_reset() const override;
    // Every chain is handled whole when popped: nothing is ever in flight.
    Result<QueuePositions> settle_queues() override;

    const BalloonOptions& options() const { return opts_; }
    uint32_t actual_pages() const;
    const BalloonMetrics& metrics() const { return metrics_; }
    void visit_metrics(MetricVisitor& v) const override { metrics_.visit(v); }

private:
    void process_locked(uint16_t index);
    void inflate_or_deflate(const DescriptorChain& chain, bool inflate);
    void report(const DescriptorChain& chain);

    const BalloonOptions opts_;
    BalloonMetrics metrics_;
    mutable std::mutex mu_;  // activate/reset/config (vCPU threads) vs queue_notify (event loop)
    uint32_t actual_ = 0;
    GuestMemory* mem_ = nullptr;
    VirtioInterrupt* interrupt_ = nullptr;
    std::optional<SplitQueue> queues_[3];
    bool needs_reset_ = false;
};

}  // namespace kestrel
