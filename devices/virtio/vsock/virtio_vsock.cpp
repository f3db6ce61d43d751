#include "devices/virtio/vsock/virtio_vsock.hpp"

#include <sys/epoll.h>

#include "devices/virtio/queue/virtq_spec.hpp"
#include "devices/virtio/vsock/vsock_core.hpp"
#include "vmm/base/log.hpp"

namespace kestrel {

Result<std::unique_ptr<VirtioVsock>> VirtioVsock::create(const VirtioVsockOptions& opts) {
    if (opts.guest_cid < vsock::kMinGuestCid || opts.guest_cid > vsock::kMaxGuestCid)
        return fail("vsock: guest CID {} is reserved or out of range (3..{})", opts.guest_cid,
                    vsock::kMaxGuestCid);
    // Guest-initiated connections go to "<path>_<port>": make sure the longest one fits.
    if (opts.uds_path.size() + 11 > kMaxUnixPathBytes)
        return fail("vsock: socket path '{}' is too long: '<path>_4294967295' must fit in {} bytes",
                    opts.uds_path, kMaxUnixPathBytes);
    if (opts.buf_alloc == 0) return fail("vsock: buf_alloc must not be 0");
    if (opts.max_connections == 0 || opts.max_connections > kMaxConnectionsLimit)
        return fail("vsock: max_connections {} not in 1..{}", opts.max_connections,
                    kMaxConnectionsLimit);
    if (opts.queue_size == 0 || (opts.queue_size & (opts.queue_size - 1)) != 0 ||
        opts.queue_size > virtq::kMaxQueueSize)
        return fail("vsock: queue size {} is not a power of two <= {}", opts.queue_size,
                    virtq::kMaxQueueSize);
    auto listener = UnixListener::create(opts.uds_path);
    if (!listener) return std::unexpected(listener.error());
    auto core = std::make_shared<Core>(std::move(*listener), opts);
    return std::unique_ptr<VirtioVsock>(new VirtioVsock(std::move(core), opts.guest_cid,
                                                        opts.queue_size));
}

VirtioVsock::VirtioVsock(std::shared_ptr<Core> core, uint64_t cid, uint16_t queue_size)
    : core_(std::move(core)), guest_cid_(cid), queue_size_(queue_size) {}

VirtioVsock::~VirtioVsock() { reset(); }

uint64_t VirtioVsock::device_features() const {
    return virtq::kFeatureVersion1 | virtq::kFeatureEventIdx | virtq::kFeatureIndirectDesc |
           vsock::kFeatureStream;
}

void VirtioVsock::read_config(uint64_t offset, std::span<uint8_t> data) {
    vsock::Config cfg{guest_cid_};
    const auto* raw = reinterpret_cast<const uint8_t*>(&cfg);
    for (size_t i = 0; i < data.size(); ++i) {
        uint64_t at = offset + i;
        data[i] = (at >= offset && at < sizeof cfg) ? raw[at] : 0;
    }
}

void VirtioVsock::write_config(uint64_t, std::span<const uint8_t>) {}

Result<void> VirtioVsock::activate(ActivateContext ctx) {
    bool restored = false;
    for (const auto& q : ctx.queues) restored |= q.position.has_value();
    {
        std::lock_guard lk(core_->mu);
        TRY(activate_locked(ctx));
        if (!restored || !send_transport_reset_locked()) return {};
    }
    ctx.interrupt.signal_queue(vsock::kEventQueue);
    return {};
}

// §5.10.6.7: the event in the driver's first event buffer; false when there is none (the
// driver gave none: it then cannot learn of the reset, as with any device).
bool VirtioVsock::send_transport_reset_locked() {
    Core& c = *core_;
    auto popped = c.event->pop(*c.mem);
    if (!popped || !*popped) return false;
    uint16_t head;
    uint32_t len = 0;
    if (auto* chain = std::get_if<DescriptorChain>(&**popped)) {
        head = chain->head();
        const vsock::Event ev{.id = 0};  // VIRTIO_VSOCK_EVENT_TRANSPORT_RESET
        auto w = chain->write_from(*c.mem, std::span(reinterpret_cast<const uint8_t*>(&ev), sizeof ev));
        if (w && *w == sizeof ev) len = sizeof ev;
    } else {
        head = std::get<MalformedChain>(**popped).head;
    }
    if (!c.event->add_used(*c.mem, head, len)) return false;
    log::info("virtio-vsock: transport reset sent to the guest (restored: no connections)");
    return true;
}

Result<QueuePositions> VirtioVsock::settle_queues() {
    std::lock_guard lk(core_->mu);
    Core& c = *core_;
    QueuePositions out(vsock::kNumQueues);
    if (!c.active) return out;
    // tx packets are handled whole when popped and event buffers only taken for a reset; rx
    // buffers a read found nothing for wait in the stash, the chains popped last.
    const std::pair<std::optional<SplitQueue>*, size_t> queues[] = {{&c.rx, c.rx_stash.size()}, {&c.tx, 0}, {&c.event, 0}};
    for (size_t i = 0; i < vsock::kNumQueues; ++i) {
        auto& [q, unstarted] = queues[i];
        if (!*q) continue;
        auto pos = (*q)->position(static_cast<uint16_t>(unstarted));
        if (!pos) return std::unexpected(context(pos.error(), fmt::format("virtio-vsock queue {}", i)));
        out[i] = *pos;
    }
    return out;
}

Result<void> VirtioVsock::activate_locked(const ActivateContext& ctx) {
    Core& c = *core_;
    if (c.active) c.reset_locked();
    if (ctx.queues.size() != vsock::kNumQueues)
        return fail("virtio-vsock: {} queues configured, expected 3", ctx.queues.size());
    static constexpr const char* kNames[] = {"rx queue", "tx queue", "event queue"};
    std::optional<SplitQueue> qs[vsock::kNumQueues];
    for (uint16_t i = 0; i < vsock::kNumQueues; ++i) {
        auto q = SplitQueue::create(ctx.mem, ctx.queues[i], queue_size_, ctx.acked_features);
        if (!q) return std::unexpected(context(std::move(q).error(),
                                               fmt::format("virtio-vsock {}", kNames[i])));
        qs[i] = std::move(*q);
    }
    c.rx = std::move(qs[0]);
    c.tx = std::move(qs[1]);
    c.event = std::move(qs[2]);
    c.mem = &ctx.mem;
    c.irq = &ctx.interrupt;
    c.events = &ctx.events;
    c.needs_reset = false;
    c.rx_starved = false;
    if (auto r = c.register_fd(c.listener.fd(), EPOLLIN); !r) {
        c.reset_locked();
        return std::unexpected(context(r.error(), "virtio-vsock: watch listener"));
    }
    c.listener_registered = true;
    c.active = true;
    return {};
}

void VirtioVsock::queue_notify(uint16_t index) {
    VirtioInterrupt* to_signal = nullptr;
    bool sig_rx = false, sig_tx = false;
    {
        std::lock_guard lk(core_->mu);
        Core& c = *core_;
        if (!c.active || c.needs_reset) return;
        c.rx_used = c.tx_used = false;
        switch (index) {
        case vsock::kRxQueue:
            // New buffers: control packets first, then let the sockets be read again.
            c.rx_starved = false;
            c.fill_rx();
            if (!c.rx_starved) c.update_all_interests();
            break;
        case vsock::kTxQueue:
            c.process_tx();
            c.fill_rx();
            break;
        case vsock::kEventQueue:
            break;  // buffers kept for a transport-reset event (after a restore)
        default:
            log::debug("virtio-vsock: notify for non-existent queue {}", index);
            return;
        }
        c.collect_signals(to_signal, sig_rx, sig_tx);
    }
    Core::raise(to_signal, sig_rx, sig_tx);
}

void VirtioVsock::reset() {
    std::lock_guard lk(core_->mu);
    core_->reset_locked();
}

bool VirtioVsock::needs_reset() const {
    std::lock_guard lk(core_->mu);
    return core_->needs_reset;
}

const VsockMetrics& VirtioVsock::metrics() const { return core_->metrics; }

const std::string& VirtioVsock::uds_path() const { return core_->listener.path(); }

bool VirtioVsock::replaced_stale_socket() const { return core_->listener.replaced_stale(); }

size_t VirtioVsock::connection_count() const {
    std::lock_guard lk(core_->mu);
    return core_->total_connections();
}

}  // namespace kestrel
