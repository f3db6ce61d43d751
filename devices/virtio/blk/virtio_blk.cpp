#include "devices/virtio/blk/virtio_blk.hpp"

#include <sys/epoll.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <variant>

#include "devices/virtio/blk/bounce_pool.hpp"
#include "devices/virtio/blk/uring_backend.hpp"
#include "devices/virtio/queue/split_queue.hpp"
#include "devices/virtio/queue/virtq_spec.hpp"
#include "vmm/base/keep_forever.hpp"
#include "vmm/base/log.hpp"

namespace kestrel {

namespace {

using Kind = BlkRequest::Kind;

void count_type(BlkMetrics& m, uint32_t type) {
    switch (type) {
    case blk::kTypeIn: return BlkMetrics::inc(m.reads);
    case blk::kTypeOut: return BlkMetrics::inc(m.writes);
    case blk::kTypeFlush: return BlkMetrics::inc(m.flushes);
    case blk::kTypeGetId: return BlkMetrics::inc(m.get_ids);
    case blk::kTypeDiscard: return BlkMetrics::inc(m.discards);
    case blk::kTypeWriteZeroes: return BlkMetrics::inc(m.write_zeroes);
    default: return BlkMetrics::inc(m.other_types);
    }
}

void count_reject(BlkMetrics& m, BlkReject why) {
    switch (why) {
    case BlkReject::None: return;
    case BlkReject::BadHeader: return BlkMetrics::inc(m.bad_header);
    case BlkReject::MissingStatus: return BlkMetrics::inc(m.missing_status);
    case BlkReject::BadLength: return BlkMetrics::inc(m.bad_length);
    case BlkReject::OutOfRange: return BlkMetrics::inc(m.out_of_range);
    case BlkReject::ReadOnly: return BlkMetrics::inc(m.read_only);
    case BlkReject::Unsupported: return BlkMetrics::inc(m.unsupported);
    case BlkReject::BadSegment: return BlkMetrics::inc(m.bad_segment);
    }
}

BlkMetrics::Op latency_op(Kind k) {
    switch (k) {
    case Kind::Read: return BlkMetrics::Op::Read;
    case Kind::Write: return BlkMetrics::Op::Write;
    case Kind::Flush: return BlkMetrics::Op::Flush;
    default: return BlkMetrics::Op::Other;
    }
}

const char* reject_name(BlkReject why) {
    switch (why) {
    case BlkReject::None: return "none";
    case BlkReject::BadHeader: return "header shorter than 16 bytes";
    case BlkReject::MissingStatus: return "no writable status byte";
    case BlkReject::BadLength: return "bad data length";
    case BlkReject::OutOfRange: return "sector range past capacity";
    case BlkReject::ReadOnly: return "write to a read-only disk";
    case BlkReject::Unsupported: return "unsupported request type";
    case BlkReject::BadSegment: return "bad discard/write-zeroes segment";
    }
    return "?";
}

}  // namespace

static_assert(VirtioBlk::kMaxQueues <= BlkMetrics::kMaxQueues, "every queue has its counters");

struct VirtioBlk::Shared {
    BlkMetrics metrics;
    std::atomic<bool> needs_reset{false};
    int fd = -1;
    bool direct = false;
    std::array<uint8_t, blk::kIdBytes> id{};
    std::shared_ptr<RateLimiter> limiter;
};

struct VirtioBlk::QueueWorker {
    struct InFlight {
        DescriptorChain chain;
        BlkRequest req;
        BouncePool::Lease bounce;  // O_DIRECT with unaligned guest buffers; count 0: none
        uint64_t submitted_ns = 0; // metric_clock_ns() at submission (latency histogram)
    };
    // Popped, valid, but waiting for room in the host memory budget (virtio_blk.hpp).
    // Or refused by the rate limiter (`throttled`): its timer resumes the queue.
    struct Waiting {
        DescriptorChain chain;
        BlkRequest req;
        bool throttled = false;
    };

    std::mutex mu;
    std::vector<iovec> scratch_iov;  // submit()'s iovecs, reused
    bool active = true;
    bool broken = false;       // queue-level error: stop using it until reset
    bool starved = false;      // stopped popping because every slot was busy
    bool used_added = false;   // used ring moved since the last should_notify
    uint16_t index = 0;
    GuestMemory* mem = nullptr;
    VirtioInterrupt* irq = nullptr;
    std::shared_ptr<Shared> shared;
    BlkLimits limits;
    std::optional<SplitQueue> queue;
    std::optional<UringBackend> backend;
    std::vector<std::optional<InFlight>> slots;
    std::vector<uint16_t> free_slots;
    std::optional<Waiting> waiting;   // at most one: the queue stops popping behind it
    std::optional<BouncePool> pool;   // direct disks only
    uint32_t held_descriptors = 0;    // descriptors of the chains in `slots`

    BlkMetrics& m() { return shared->metrics; }

    void mark_broken(const Error& e) {
        if (!broken) log::warn("virtio-blk queue {}: {}; device needs reset", index, e.what());
        broken = true;
        BlkMetrics::inc(m().queue_errors);
        shared->needs_reset.store(true);
    }

    void put_used(uint16_t head, uint32_t len) {
        if (auto r = queue->add_used(*mem, head, len); !r) return mark_broken(r.error());
        used_added = true;
    }

    void complete(const DescriptorChain& chain, const BlkRequest& req, uint8_t st, uint32_t data_len) {
        auto w = chain.write_from(*mem, std::span(&st, 1), req.status_offset);
        if (!w || *w != 1) log::debug("virtio-blk queue {}: cannot write status of head {}", index, chain.head());
        put_used(chain.head(), data_len + 1);
    }

    void handle(DescriptorChain chain) {
        BlkRequest req = parse_blk_request(*mem, chain, limits);
        if (req.kind != Kind::Drop) count_type(m(), req.type);
        BlkMetrics::inc(m().queues[index].requests);
        if (req.reject != BlkReject::None) {
            count_reject(m(), req.reject);
            log::debug("virtio-blk queue {}: head {} type {}: {}", index, chain.head(), req.type,
                       reject_name(req.reject));
        }
        switch (req.kind) {
        case Kind::Drop:
            return put_used(chain.head(), 0);
        case Kind::Status:
            return complete(chain, req, req.status, 0);
        case Kind::GetId: {
            auto w = chain.write_from(*mem, std::span(shared->id.data(), req.len), 0);
            if (!w || *w != req.len) {
                BlkMetrics::inc(m().io_errors);
                return complete(chain, req, blk::kStatusIoErr, 0);
            }
            return complete(chain, req, blk::kStatusOk, static_cast<uint32_t>(req.len));
        }
        default:
            if (!admit(req)) {
                waiting.emplace(Waiting{std::move(chain), req, true});
                return;
            }
            if (!submit(chain, req)) {
                BlkMetrics::inc(m().budget_waits);
                waiting.emplace(Waiting{std::move(chain), req});
            }
            return;
        }
    }

    bool busy() const { return free_slots.size() != slots.size(); }
    void count_in_flight() {
        BlkMetrics::set(m().queues[index].in_flight, static_cast<int64_t>(slots.size() - free_slots.size()));
    }

    // One op, plus the data bytes of a read or write (as Firecracker's block device counts).
    bool admit(const BlkRequest& req) {
        const bool data = req.kind == Kind::Read || req.kind == Kind::Write;
        return shared->limiter->consume(1, data ? req.len : 0);
    }

    // Starts the I/O of `req` (or completes it with an error), taking `chain` into a slot:
    // true. False when it does not fit the host memory budget now (only while other requests
    // are in flight, whose completions will make room); `chain` is then left to the caller.
    bool submit(DescriptorChain& chain, const BlkRequest& req) {
        auto descs = static_cast<uint32_t>(chain.descriptors().size());
        if (held_descriptors + descs > VirtioBlk::kMaxHeldDescriptors && busy()) return false;
        uint16_t tag = free_slots.back();
        // The back-end copies the vectors, so one scratch vector per queue serves every request.
        std::vector<iovec>& iov = scratch_iov;
        iov.clear();
        BouncePool::Lease bounce;
        if (req.kind == Kind::Read || req.kind == Kind::Write) {
            auto v = req.kind == Kind::Read
                         ? chain.append_writable_iovecs(*mem, 0, req.len, iov)
                         : chain.append_readable_iovecs(*mem, sizeof(blk::RequestHeader), req.len, iov);
            if (!v) {
                BlkMetrics::inc(m().io_errors);
                complete(chain, req, blk::kStatusIoErr, 0);
                return true;
            }
            if (shared->direct && !BlockFile::is_direct_aligned(req.offset, iov)) {
                if (!pool) pool.emplace(VirtioBlk::kBouncePoolBytes);
                auto got = pool->acquire(req.len);  // req.len <= kMaxDataBytes <= capacity
                if (!got) {
                    log::warn("virtio-blk queue {}: {}", index, got.error().what());
                    BlkMetrics::inc(m().io_errors);
                    complete(chain, req, blk::kStatusIoErr, 0);
                    return true;
                }
                // An idle pool holds any request, so this waits only while others are in flight.
                if (!*got) return false;
                bounce = **got;
                std::span<uint8_t> buf = pool->bytes(bounce, req.len);
                if (req.kind == Kind::Write) {
                    auto copied = chain.read_to(*mem, buf, sizeof(blk::RequestHeader));
                    if (!copied || *copied != req.len) {
                        pool->release(bounce);
                        BlkMetrics::inc(m().io_errors);
                        complete(chain, req, blk::kStatusIoErr, 0);
                        return true;
                    }
                }
                iov.assign(1, iovec{buf.data(), buf.size()});
                BlkMetrics::inc(m().bounced);
                BlkMetrics::raise_to(m().bounce_peak_bytes, pool->peak_bytes());
            }
        }
        Result<void> r;
        switch (req.kind) {
        case Kind::Read: r = backend->submit_read(req.offset, iov, tag); break;
        case Kind::Write: r = backend->submit_write(req.offset, iov, tag); break;
        case Kind::Flush: r = backend->submit_flush(tag); break;
        case Kind::Discard: r = backend->submit_discard(req.offset, req.len, tag); break;
        case Kind::WriteZeroes: r = backend->submit_write_zeroes(req.offset, req.len, req.unmap, tag); break;
        default: r = fail("not an I/O request"); break;
        }
        if (!r) {
            log::debug("virtio-blk queue {}: submit failed: {}", index, r.error().what());
            if (pool) pool->release(bounce);
            BlkMetrics::inc(m().io_errors);
            complete(chain, req, blk::kStatusIoErr, 0);
            return true;
        }
        free_slots.pop_back();
        held_descriptors += descs;
        slots[tag].emplace(InFlight{std::move(chain), req, bounce, metric_clock_ns()});
        count_in_flight();
        return true;
    }

    // Back-end completion of slot `tag` with result `res` (see UringBackend).
    void on_complete(uint64_t tag, int32_t res) {
        auto& slot = slots[tag];
        if (!slot) return;
        InFlight f = std::move(*slot);
        slot.reset();
        free_slots.push_back(static_cast<uint16_t>(tag));
        held_descriptors -= static_cast<uint32_t>(f.chain.descriptors().size());
        count_in_flight();

        uint8_t st = blk::kStatusOk;
        uint32_t data_len = 0;
        const BlkRequest& req = f.req;
        if (req.kind == Kind::Read || req.kind == Kind::Write) {
            if (res < 0 || static_cast<uint64_t>(res) != req.len) {
                st = blk::kStatusIoErr;
            } else if (req.kind == Kind::Read) {
                if (f.bounce.count != 0) {
                    auto w = f.chain.write_from(*mem, pool->bytes(f.bounce, req.len), 0);
                    if (!w || *w != req.len) st = blk::kStatusIoErr;
                } else if (mem->dirty_tracking()) {
                    // The kernel wrote the guest's buffers just now: mark them at completion,
                    // as Firecracker's mark_dirty_mem_and_unwrap does, since a dirty-log round
                    // since submission has taken the mark made then.
                    (void)f.chain.mark_written(*mem, 0, req.len);
                }
                data_len = static_cast<uint32_t>(req.len);
                BlkMetrics::inc(m().bytes_read, req.len);
                BlkMetrics::inc(m().queues[index].read_bytes, req.len);
            } else {
                BlkMetrics::inc(m().bytes_written, req.len);
                BlkMetrics::inc(m().queues[index].write_bytes, req.len);
            }
        } else if (res == -EOPNOTSUPP) {
            st = blk::kStatusUnsupp;
        } else if (res < 0) {
            st = blk::kStatusIoErr;
        }
        if (f.bounce.count != 0) pool->release(f.bounce);
        m().record_latency(latency_op(req.kind), metric_clock_ns() - f.submitted_ns);
        if (st != blk::kStatusOk) {
            BlkMetrics::inc(m().io_errors);
            log::debug("virtio-blk queue {}: head {} type {} at {}: host I/O result {} (wanted {})", index,
                       f.chain.head(), req.type, req.offset, res, req.len);
            data_len = 0;
        }
        complete(f.chain, req, st, data_len);
    }

    // Pops and dispatches every available chain; one io_uring_submit for all of them.
    void process_available() {
        uint64_t sqes_before = backend->stats().sqes_submitted;
        for (;;) {
            bool any = pump();
            if (backend->pending() > 0) {
                if (auto r = backend->submit_pending(); !r)
                    log::warn("virtio-blk queue {}: {}", index, r.error().what());
            }
            if (!any) break;
            // Page-cache hits complete inside io_uring_submit: harvest them now, so they share
            // this batch's interrupt instead of costing an eventfd round trip. Their room in
            // the budget may let a waiting request go: then go round again.
            unsigned done = backend->reap();
            if (!waiting || done == 0 || broken) break;
        }
        if (backend->stats().sqes_submitted != sqes_before) BlkMetrics::inc(m().batches);
    }

    // The waiting request first, then every available chain, until the budget or the slots
    // run out; prepares their SQEs. True if any request was taken.
    bool pump() {
        starved = false;
        bool any = false;
        while (!broken) {
            if (free_slots.empty()) {
                starved = true;  // only a driver that reuses in-flight heads gets here
                break;
            }
            if (waiting) {
                if (waiting->throttled) {
                    if (!admit(waiting->req)) break;  // still refused: the timer comes back
                    waiting->throttled = false;
                }
                if (!submit(waiting->chain, waiting->req)) break;  // still no room
                waiting.reset();
                any = true;
                continue;
            }
            auto popped = queue->pop(*mem);
            if (!popped) {
                mark_broken(popped.error());
                break;
            }
            if (!*popped) break;
            any = true;
            if (auto* bad = std::get_if<MalformedChain>(&**popped)) {
                BlkMetrics::inc(m().malformed_chains);
                log::debug("virtio-blk queue {}: malformed chain at head {}: {}", index, bad->head,
                           bad->error.what());
                put_used(bad->head, 0);
                continue;
            }
            handle(std::move(std::get<DescriptorChain>(**popped)));
        }
        return any;
    }

    // True when the driver should get a used-buffer notification now.
    bool take_notify() {
        if (!used_added || broken) return false;
        used_added = false;
        auto n = queue->should_notify(*mem);
        if (!n) {
            mark_broken(n.error());
            return false;
        }
        return *n;
    }

    void raise(bool notify) {
        if (!notify) return;
        BlkMetrics::inc(m().interrupts);
        irq->signal_queue(index);
    }

    void notify() {
        bool n;
        {
            std::lock_guard lk(mu);
            if (!active) return;
            process_available();
            n = take_notify();
        }
        raise(n);
    }

    void on_event() {
        bool n;
        {
            std::lock_guard lk(mu);
            if (!active) {
                // Reset is under way: it started the ring's quiesce under this lock, so these
                // completions are dropped. Reaping them keeps the ring fd from staying
                // readable (level-triggered) until reset unregisters it; never wait here.
                if (backend) backend->reap();
                return;
            }
            backend->reap();
            if (starved || waiting) process_available();
            n = take_notify();
        }
        raise(n);
    }

    // The rate limiter's timer fired: a request it held up may go now.
    void on_limiter_timer() {
        bool n;
        {
            std::lock_guard lk(mu);
            if (!active || !waiting || !waiting->throttled) return;
            process_available();
            n = take_notify();
        }
        raise(n);
    }

    // After a successful quiesce: nothing of the activation is left in the kernel.
    void forget() {
        slots.clear();
        free_slots.clear();
        waiting.reset();
        held_descriptors = 0;
        queue.reset();
        BlkMetrics::set(m().queues[index].in_flight, 0);
    }
};

Result<std::unique_ptr<VirtioBlk>> VirtioBlk::create(const VirtioBlkOptions& opts) {
    if (opts.serial.size() > blk::kIdBytes)
        return fail("virtio-blk serial '{}' is longer than {} bytes", opts.serial, blk::kIdBytes);
    if (opts.num_queues == 0 || opts.num_queues > kMaxQueues)
        return fail("virtio-blk: num_queues {} out of range 1..{}", opts.num_queues, kMaxQueues);
    if (opts.queue_size < 2 || opts.queue_size > virtq::kMaxQueueSize ||
        (opts.queue_size & (opts.queue_size - 1)) != 0)
        return fail("virtio-blk: queue size {} is not a power of 2 in 2..{}", opts.queue_size,
                    virtq::kMaxQueueSize);
    auto file = BlockFile::open(opts.path, opts.read_only, opts.direct, opts.lock_image);
    if (!file) return std::unexpected(file.error());
    // Always there (unlimited until told otherwise), so PATCH can limit a drive at run time.
    auto limiter = RateLimiter::create();
    if (!limiter) return std::unexpected(context(limiter.error(), "virtio-blk"));
    return std::unique_ptr<VirtioBlk>(new VirtioBlk(std::move(*file), std::move(*limiter), opts));
}

VirtioBlk::VirtioBlk(BlockFile file, std::shared_ptr<RateLimiter> limiter, const VirtioBlkOptions& opts)
    : file_(std::move(file)), num_queues_(opts.num_queues), queue_size_(opts.queue_size),
      shared_(std::make_shared<Shared>()), limiter_(std::move(limiter)) {
    features_ = virtq::kFeatureVersion1 | virtq::kFeatureEventIdx | virtq::kFeatureIndirectDesc |
                blk::kFeatureSizeMax | blk::kFeatureSegMax | blk::kFeatureBlkSize | blk::kFeatureFlush |
                blk::kFeatureMq;
    if (file_.read_only())
        features_ |= blk::kFeatureRo;
    else
        features_ |= blk::kFeatureDiscard | blk::kFeatureWriteZeroes;

    config_.capacity = file_.sectors();
    // Header and status take one descriptor each when the chain is direct (no indirect);
    // at least 1, or a 2-entry queue could carry no data at all.
    config_.size_max = kSizeMax;
    config_.seg_max = std::clamp<uint32_t>(queue_size_ - 2u, 1u, kMaxSegMax);
    config_.blk_size = static_cast<uint32_t>(blk::kSectorSize);
    config_.num_queues = num_queues_;
    config_.max_discard_sectors = kMaxDiscardSectors;
    config_.max_discard_seg = 1;
    config_.discard_sector_alignment = kDiscardSectorAlignment;
    config_.max_write_zeroes_sectors = kMaxWriteZeroesSectors;
    config_.max_write_zeroes_seg = 1;
    config_.write_zeroes_may_unmap = 1;

    shared_->fd = file_.fd();
    shared_->direct = file_.direct();
    shared_->metrics.num_queues = num_queues_;
    shared_->limiter = limiter_;
    std::memcpy(shared_->id.data(), opts.serial.data(), opts.serial.size());
}

VirtioBlk::~VirtioBlk() {
    reset();
    std::lock_guard lk(mu_);
    if (parked_.empty()) return;
    log::error("virtio-blk: {} queue(s) still have requests in host I/O at exit; leaking them", parked_.size());
    // A queue whose requests may still be in the host kernel must never be freed: the kernel
    // would write into its bounce pool, or read it, after the memory went back to the heap.
    for (auto& w : parked_) keep_forever(std::move(w));
    parked_.clear();
}

void VirtioBlk::read_config(uint64_t offset, std::span<uint8_t> data) {
    // Bytes past our struct (secure-erase/zoned fields of features we do not offer) read 0.
    std::fill(data.begin(), data.end(), uint8_t{0});
    if (offset >= sizeof config_) return;
    size_t n = std::min<uint64_t>(data.size(), sizeof config_ - offset);
    std::lock_guard lk(config_mu_);  // a swap may change capacity (config_generation tells)
    std::memcpy(data.data(), reinterpret_cast<const uint8_t*>(&config_) + offset, n);
}

void VirtioBlk::write_config(uint64_t offset, std::span<const uint8_t> data) {
    // Only `writeback` is writable, and only with VIRTIO_BLK_F_CONFIG_WCE, which we do not offer.
    log::debug("virtio-blk: ignored config write of {} bytes at {}", data.size(), offset);
}

Result<void> VirtioBlk::activate(ActivateContext ctx) {
    if (ctx.queues.size() > num_queues_)
        return fail("virtio-blk: {} queues configured, device has {}", ctx.queues.size(), num_queues_);
    std::lock_guard file_lock(file_mu_);
    {
        std::lock_guard lk(mu_);
        if (!drain_parked_locked())
            return fail("virtio-blk: {} queue(s) of the previous activation still have requests in host I/O "
                        "(a hung backing store?); the device cannot be used again until they finish",
                        parked_.size());
    }
    BlkLimits limits;
    limits.capacity_sectors = capacity_sectors();
    limits.read_only = file_.read_only();
    limits.discard = (ctx.acked_features & blk::kFeatureDiscard) != 0;
    limits.write_zeroes = (ctx.acked_features & blk::kFeatureWriteZeroes) != 0;
    limits.max_discard_sectors = kMaxDiscardSectors;
    limits.max_write_zeroes_sectors = kMaxWriteZeroesSectors;
    limits.max_data_bytes = kMaxDataBytes;

    std::vector<std::shared_ptr<QueueWorker>> workers(ctx.queues.size());
    auto undo = [&] {
        for (auto& w : workers)
            if (w && w->backend) ctx.events.remove(w->backend->event_fd());
    };
    for (size_t i = 0; i < ctx.queues.size(); ++i) {
        const QueueConfig& qc = ctx.queues[i];
        if (!qc.ready) continue;  // Linux enables min(num_queues, its CPUs) queues
        auto q = SplitQueue::create(ctx.mem, qc, queue_size_, ctx.acked_features);
        if (!q) {
            undo();
            return std::unexpected(context(q.error(), fmt::format("virtio-blk queue {}", i)));
        }
        auto w = std::make_shared<QueueWorker>();
        w->index = static_cast<uint16_t>(i);
        w->mem = &ctx.mem;
        w->irq = &ctx.interrupt;
        w->shared = shared_;
        w->limits = limits;
        w->queue.emplace(std::move(*q));
        w->slots.resize(qc.size);
        for (uint32_t s = qc.size; s > 0; --s) w->free_slots.push_back(static_cast<uint16_t>(s - 1));
        QueueWorker* raw = w.get();
        auto b = UringBackend::create(file_.fd(), qc.size,
                                      [raw](uint64_t tag, int32_t res) { raw->on_complete(tag, res); });
        if (!b) {
            undo();
            return std::unexpected(context(b.error(), fmt::format("virtio-blk queue {}", i)));
        }
        w->backend.emplace(std::move(*b));
        auto added = ctx.events.add(w->backend->event_fd(), EPOLLIN, [w](uint32_t) { w->on_event(); });
        if (!added) {
            w->backend.reset();
            undo();
            return std::unexpected(context(added.error(), fmt::format("virtio-blk queue {}", i)));
        }
        workers[i] = std::move(w);
    }
    if (auto r = ctx.events.add(limiter_->timer_fd(), EPOLLIN, [this](uint32_t) { on_limiter_timer(); }); !r) {
        undo();
        return std::unexpected(context(r.error(), "virtio-blk rate limiter"));
    }
    std::lock_guard lk(mu_);
    workers_ = std::move(workers);
    events_ = &ctx.events;
    return {};
}

void VirtioBlk::queue_notify(uint16_t index) {
    std::shared_ptr<QueueWorker> w;
    {
        std::lock_guard lk(mu_);
        if (index < workers_.size()) w = workers_[index];
    }
    if (!w) {
        log::debug("virtio-blk: notify for inactive queue {}", index);
        return;
    }
    w->notify();
}

void VirtioBlk::reset() {
    std::vector<std::shared_ptr<QueueWorker>> workers;
    EventRegistry* events;
    {
        std::lock_guard lk(mu_);
        workers = std::move(workers_);
        workers_.clear();
        events = std::exchange(events_, nullptr);
    }
    std::erase(workers, nullptr);
    // Every ring cancels at once, so the queues run down together within one limit.
    for (auto& w : workers) {
        std::lock_guard lk(w->mu);
        w->active = false;
        w->backend->start_quiesce();
    }
    // Outside the queue locks: a registry may wait for a running callback, which takes one.
    if (events) {
        for (auto& w : workers) (void)events->remove(w->backend->event_fd());
        (void)events->remove(limiter_->timer_fd());
    }
    auto deadline = std::chrono::steady_clock::now() + kResetLimit;
    std::vector<std::shared_ptr<QueueWorker>> stuck;
    unsigned stuck_requests = 0;
    for (auto& w : workers) {
        std::lock_guard lk(w->mu);
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
        if (w->backend->quiesce(std::max(left, std::chrono::milliseconds(0)))) {
            w->forget();
        } else {
            stuck_requests += w->backend->in_flight();
            stuck.push_back(w);
        }
    }
    if (!stuck.empty()) {
        BlkMetrics::inc(shared_->metrics.stuck_resets);
        log::warn("virtio-blk: reset gave up after {} ms on {} request(s) still in host I/O (hung backing "
                  "store?); their completions will be dropped, but a late read may still write into guest "
                  "memory it was given; the device refuses activation until they finish",
                  kResetLimit.count(), stuck_requests);
    }
    {
        std::lock_guard lk(mu_);
        drain_parked_locked();
        parked_.insert(parked_.end(), stuck.begin(), stuck.end());
    }
    shared_->needs_reset.store(false);
}

void VirtioBlk::on_limiter_timer() {
    limiter_->on_timer();
    std::vector<std::shared_ptr<QueueWorker>> workers;
    {
        std::lock_guard lk(mu_);
        workers = workers_;
    }
    for (auto& w : workers)
        if (w) w->on_limiter_timer();
}

bool VirtioBlk::drain_parked_locked() {
    std::erase_if(parked_, [](const std::shared_ptr<QueueWorker>& w) {
        std::lock_guard lk(w->mu);
        if (!w->backend->quiesce(std::chrono::milliseconds(0))) return false;
        w->forget();
        return true;
    });
    return parked_.empty();
}

bool VirtioBlk::needs_reset() const { return shared_->needs_reset.load(); }

Result<void> VirtioBlk::replace_file(BlockFile file, std::chrono::milliseconds limit) {
    if (file.read_only() != file_.read_only() || file.direct() != file_.direct())
        return fail("virtio-blk: the new image must be opened as the old one is (read-only: {}, direct: {})",
                    file_.read_only(), file_.direct());
    std::lock_guard file_lock(file_mu_);
    std::lock_guard dev_lock(mu_);  // no activation or reset meanwhile
    std::vector<std::shared_ptr<QueueWorker>> workers;
    for (const auto& w : workers_)
        if (w) workers.push_back(w);
    std::vector<std::unique_lock<std::mutex>> stopped;
    for (const auto& w : workers) stopped.emplace_back(w->mu);

    // Drain: what the kernel has of the old image's requests finishes and reaches the guest
    // (reap() also resubmits short transfers, which must still hit the old image).
    auto drain = [&]() -> Result<void> {
        const auto deadline = std::chrono::steady_clock::now() + limit;
        for (const auto& w : workers) {
            while (w->backend->in_flight() > 0) {
                auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
                if (left.count() <= 0 || !w->backend->wait_idle(left))
                    return fail("virtio-blk queue {}: {} request(s) still in host I/O after {} ms (a slow or hung "
                                "backing store?); the drive keeps its image", w->index, w->backend->in_flight(),
                                limit.count());
                w->backend->reap();
            }
        }
        return {};
    };
    // Every ring on the new file, or (one refused) every ring back on the old one.
    auto repoint = [&]() -> Result<void> {
        for (size_t i = 0; i < workers.size(); ++i) {
            auto r = workers[i]->backend->replace_file(file.fd());
            if (r) continue;
            for (size_t j = 0; j < i; ++j) (void)workers[j]->backend->replace_file(file_.fd());
            return std::unexpected(context(r.error(), fmt::format("virtio-blk queue {}", workers[i]->index)));
        }
        return {};
    };
    Result<void> done = drain();
    if (done) done = repoint();
    if (done) {
        const uint64_t sectors = file.sectors();
        // The lock goes with the old image now: an io_uring that had the file registered may
        // hold the open file description (and so its OFD locks) a while after our fd closes,
        // and swapping back to that image must not find it locked by ourselves.
        if (auto r = file_.unlock(); !r) log::warn("virtio-blk: unlocking '{}': {}", file_.path(), r.error().what());
        file_ = std::move(file);  // the old image's fd closes
        shared_->fd = file_.fd();
        for (const auto& w : workers) w->limits.capacity_sectors = sectors;
        std::lock_guard cfg_lock(config_mu_);
        config_.capacity = sectors;
    }
    // Completions drained above may owe the driver an interrupt; requests that waited for room
    // in the budget lost the completion that would have restarted them.
    std::vector<bool> notify;
    for (const auto& w : workers) {
        if (w->waiting || w->starved) w->process_available();
        notify.push_back(w->take_notify());
    }
    stopped.clear();
    for (size_t i = 0; i < workers.size(); ++i) workers[i]->raise(notify[i]);
    return done;
}

Result<void> VirtioBlk::sync_and_unlock_image() {
    std::lock_guard file_lock(file_mu_);
    if (!file_.read_only() && ::fsync(file_.fd()) != 0) return fail_errno("fsync of disk image '{}'", file_.path());
    return file_.unlock();
}

Result<void> VirtioBlk::lock_image() {
    std::lock_guard file_lock(file_mu_);
    if (auto r = file_.lock(); !r) {
        (void)file_.unlock();  // none of it kept
        return r;
    }
    return {};
}

Result<void> VirtioBlk::refresh_capacity() {
    std::lock_guard file_lock(file_mu_);
    const uint64_t sectors = TRY(file_.refresh_size()) / blk::kSectorSize;
    std::lock_guard dev_lock(mu_);
    for (const auto& w : workers_) {
        if (!w) continue;
        std::lock_guard lk(w->mu);
        w->limits.capacity_sectors = sectors;
    }
    std::lock_guard cfg_lock(config_mu_);
    config_.capacity = sectors;
    return {};
}

Result<void> VirtioBlk::finish_host_io(std::chrono::milliseconds limit) {
    std::vector<std::shared_ptr<QueueWorker>> workers;
    {
        std::lock_guard lk(mu_);
        workers = workers_;
        // Rings a reset gave up on may still hold guest buffers: they must be done too.
        workers.insert(workers.end(), parked_.begin(), parked_.end());
    }
    const auto deadline = std::chrono::steady_clock::now() + limit;
    for (const auto& w : workers) {
        if (!w) continue;
        std::lock_guard lk(w->mu);
        if (!w->backend) continue;
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
        if (!w->backend->wait_idle(std::max(left, std::chrono::milliseconds(0))))
            return fail("virtio-blk queue {}: {} request(s) still in host I/O after {} ms (a slow or hung "
                        "backing store?)", w->index, w->backend->in_flight(), limit.count());
    }
    return {};
}
Result<QueuePositions> VirtioBlk::settle_queues() {
    std::vector<std::shared_ptr<QueueWorker>> workers;
    {
        std::lock_guard lk(mu_);
        workers = workers_;
    }
    QueuePositions out(num_queues_);
    std::vector<bool> notify(workers.size(), false);
    const auto deadline = std::chrono::steady_clock::now() + kSwapLimit;
    for (size_t i = 0; i < workers.size(); ++i) {
        const auto& w = workers[i];
        if (!w) continue;
        std::lock_guard lk(w->mu);
        if (!w->active || !w->queue) continue;
        // finish_host_io left the completions in the ring: they reach the used ring now (reap
        // may resubmit a short transfer, hence the loop). Nothing new is popped while paused.
        w->backend->reap();
        while (w->backend->in_flight() > 0) {
            auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
            if (left.count() <= 0 || !w->backend->wait_idle(left))
                return fail("virtio-blk queue {}: {} request(s) still in host I/O", w->index, w->backend->in_flight());
            w->backend->reap();
        }
        notify[i] = w->take_notify();
        // A request waiting for budget or the rate limiter was popped last and not started.
        auto pos = w->queue->position(w->waiting ? 1 : 0);
        if (!pos) return std::unexpected(context(pos.error(), fmt::format("virtio-blk queue {}", w->index)));
        out[i] = *pos;
    }
    for (size_t i = 0; i < workers.size(); ++i)
        if (workers[i]) workers[i]->raise(notify[i]);
    return out;
}

const BlkMetrics& VirtioBlk::metrics() const { return shared_->metrics; }

}  // namespace kestrel
