#include "devices/virtio/blk/virtio_blk.hpp"

#include <sys/epoll.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <variant>

#include "devices/virtio/blk/uring_backend.hpp"
#include "devices/virtio/queue/split_queue.hpp"
#include "devices/virtio/queue/virtq_spec.hpp"
#include "vmm/base/log.hpp"

namespace kestrel {

namespace {

using Kind = BlkRequest::Kind;

struct AlignedFree {
    void operator()(uint8_t* p) const { std::free(p); }
};
using AlignedBuffer = std::unique_ptr<uint8_t, AlignedFree>;

AlignedBuffer alloc_aligned(uint64_t len) {
    uint64_t rounded = (len + 4095) / 4096 * 4096;
    return AlignedBuffer(static_cast<uint8_t*>(std::aligned_alloc(4096, rounded)));
}

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

struct VirtioBlk::Shared {
    BlkMetrics metrics;
    std::atomic<bool> needs_reset{false};
    int fd = -1;
    bool direct = false;
    std::array<uint8_t, blk::kIdBytes> id{};
};

struct VirtioBlk::QueueWorker {
    struct InFlight {
        DescriptorChain chain;
        BlkRequest req;
        AlignedBuffer bounce;  // O_DIRECT with unaligned guest buffers
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
            return submit(std::move(chain), req);
        }
    }

    void submit(DescriptorChain chain, const BlkRequest& req) {
        uint16_t tag = free_slots.back();
        // The back-end copies the vectors, so one scratch vector per queue serves every request.
        std::vector<iovec>& iov = scratch_iov;
        iov.clear();
        AlignedBuffer bounce;
        if (req.kind == Kind::Read || req.kind == Kind::Write) {
            auto v = req.kind == Kind::Read
                         ? chain.append_writable_iovecs(*mem, 0, req.len, iov)
                         : chain.append_readable_iovecs(*mem, sizeof(blk::RequestHeader), req.len, iov);
            if (!v) {
                BlkMetrics::inc(m().io_errors);
                return complete(chain, req, blk::kStatusIoErr, 0);
            }
            if (shared->direct && !BlockFile::is_direct_aligned(req.offset, iov)) {
                bounce = alloc_aligned(req.len);
                if (!bounce) {
                    BlkMetrics::inc(m().io_errors);
                    return complete(chain, req, blk::kStatusIoErr, 0);
                }
                if (req.kind == Kind::Write) {
                    auto got = chain.read_to(*mem, std::span(bounce.get(), req.len), sizeof(blk::RequestHeader));
                    if (!got || *got != req.len) {
                        BlkMetrics::inc(m().io_errors);
                        return complete(chain, req, blk::kStatusIoErr, 0);
                    }
                }
                iov.assign(1, iovec{bounce.get(), req.len});
                BlkMetrics::inc(m().bounced);
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
            BlkMetrics::inc(m().io_errors);
            return complete(chain, req, blk::kStatusIoErr, 0);
        }
        free_slots.pop_back();
        slots[tag].emplace(InFlight{std::move(chain), req, std::move(bounce)});
    }

    // Back-end completion of slot `tag` with result `res` (see UringBackend).
    void on_complete(uint64_t tag, int32_t res) {
        auto& slot = slots[tag];
        if (!slot) return;
        InFlight f = std::move(*slot);
        slot.reset();
        free_slots.push_back(static_cast<uint16_t>(tag));

        uint8_t st = blk::kStatusOk;
        uint32_t data_len = 0;
        const BlkRequest& req = f.req;
        if (req.kind == Kind::Read || req.kind == Kind::Write) {
            if (res < 0 || static_cast<uint64_t>(res) != req.len) {
                st = blk::kStatusIoErr;
            } else if (req.kind == Kind::Read) {
                if (f.bounce) {
                    auto w = f.chain.write_from(*mem, std::span<const uint8_t>(f.bounce.get(), req.len), 0);
                    if (!w || *w != req.len) st = blk::kStatusIoErr;
                }
                data_len = static_cast<uint32_t>(req.len);
                BlkMetrics::inc(m().bytes_read, req.len);
            } else {
                BlkMetrics::inc(m().bytes_written, req.len);
            }
        } else if (res == -EOPNOTSUPP) {
            st = blk::kStatusUnsupp;
        } else if (res < 0) {
            st = blk::kStatusIoErr;
        }
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
        starved = false;
        bool any = false;
        uint64_t sqes_before = backend->stats().sqes_submitted;
        while (!broken) {
            if (free_slots.empty()) {
                starved = true;  // only a driver that reuses in-flight heads gets here
                break;
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
        if (backend->pending() > 0) {
            if (auto r = backend->submit_pending(); !r)
                log::warn("virtio-blk queue {}: {}", index, r.error().what());
        }
        if (backend->stats().sqes_submitted != sqes_before) BlkMetrics::inc(m().batches);
        // Page-cache hits complete inside io_uring_submit: harvest them now, so they share
        // this batch's interrupt instead of costing an eventfd round trip.
        if (any) backend->reap();
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
                // Reset is under way and will quiesce the ring: do it now (completions are
                // dropped), so the ring fd stops being readable before reset unregisters it.
                if (backend) backend->quiesce();
                return;
            }
            backend->reap();
            if (starved) process_available();
            n = take_notify();
        }
        raise(n);
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
    auto file = BlockFile::open(opts.path, opts.read_only, opts.direct);
    if (!file) return std::unexpected(file.error());
    return std::unique_ptr<VirtioBlk>(new VirtioBlk(std::move(*file), opts));
}

VirtioBlk::VirtioBlk(BlockFile file, const VirtioBlkOptions& opts)
    : file_(std::move(file)), num_queues_(opts.num_queues), queue_size_(opts.queue_size),
      shared_(std::make_shared<Shared>()) {
    features_ = virtq::kFeatureVersion1 | virtq::kFeatureEventIdx | virtq::kFeatureIndirectDesc |
                blk::kFeatureSegMax | blk::kFeatureBlkSize | blk::kFeatureFlush | blk::kFeatureMq;
    if (file_.read_only())
        features_ |= blk::kFeatureRo;
    else
        features_ |= blk::kFeatureDiscard | blk::kFeatureWriteZeroes;

    config_.capacity = file_.sectors();
    // Header and status take one descriptor each when the chain is direct (no indirect).
    config_.seg_max = std::min<uint32_t>(queue_size_ - 2u, 254u);
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
    std::memcpy(shared_->id.data(), opts.serial.data(), opts.serial.size());
}

VirtioBlk::~VirtioBlk() { reset(); }

void VirtioBlk::read_config(uint64_t offset, std::span<uint8_t> data) {
    // Bytes past our struct (secure-erase/zoned fields of features we do not offer) read 0.
    std::fill(data.begin(), data.end(), uint8_t{0});
    if (offset >= sizeof config_) return;
    size_t n = std::min<uint64_t>(data.size(), sizeof config_ - offset);
    std::memcpy(data.data(), reinterpret_cast<const uint8_t*>(&config_) + offset, n);
}

void VirtioBlk::write_config(uint64_t offset, std::span<const uint8_t> data) {
    // Only `writeback` is writable, and only with VIRTIO_BLK_F_CONFIG_WCE, which we do not offer.
    log::debug("virtio-blk: ignored config write of {} bytes at {}", data.size(), offset);
}

Result<void> VirtioBlk::activate(ActivateContext ctx) {
    if (ctx.queues.size() > num_queues_)
        return fail("virtio-blk: {} queues configured, device has {}", ctx.queues.size(), num_queues_);
    BlkLimits limits;
    limits.capacity_sectors = config_.capacity;
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
    for (auto& w : workers) {
        if (!w) continue;
        {
            std::lock_guard lk(w->mu);
            w->active = false;
        }
        // Outside the queue lock: a registry may wait for a running callback, which takes it.
        if (events) (void)events->remove(w->backend->event_fd());
        std::lock_guard lk(w->mu);
        w->backend->quiesce();
        w->slots.clear();
        w->free_slots.clear();
        w->queue.reset();
    }
    shared_->needs_reset.store(false);
}

bool VirtioBlk::needs_reset() const { return shared_->needs_reset.load(); }
const BlkMetrics& VirtioBlk::metrics() const { return shared_->metrics; }

}  // namespace kestrel
