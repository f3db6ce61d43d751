#include "devices/virtio/net/virtio_net.hpp"

#include <sys/epoll.h>
#include <sys/uio.h>

#include <algorithm>
#include <cstring>

#include "devices/virtio/net/net_datapath.hpp"
#include "devices/virtio/queue/split_queue.hpp"
#include "devices/virtio/queue/virtq_spec.hpp"
#include "vmm/base/keep_forever.hpp"
#include "vmm/base/log.hpp"

namespace kestrel {

MacAddress VirtioNet::default_mac(std::string_view tap_name) {
    uint32_t h = 2166136261u;  // FNV-1a: any stable spread will do
    for (char c : tap_name) h = (h ^ static_cast<uint8_t>(c)) * 16777619u;
    return {0x52, 0x54, 0x00, static_cast<uint8_t>(h >> 16), static_cast<uint8_t>(h >> 8), static_cast<uint8_t>(h)};
}

Result<std::unique_ptr<VirtioNet>> VirtioNet::create(VirtioNetOptions opts) {
    if (opts.queue_size < 2 || opts.queue_size > virtq::kMaxQueueSize ||
        (opts.queue_size & (opts.queue_size - 1)) != 0)
        return fail("virtio-net: queue size {} is not a power of 2 in 2..{}", opts.queue_size, virtq::kMaxQueueSize);
    if (opts.mac && ((*opts.mac)[0] & 1)) return fail("virtio-net: MAC address is multicast");
    if (!opts.tap.empty() && opts.tap_fd >= 0) return fail("virtio-net: give a tap name or a tap fd, not both");
    if (opts.defer_if_busy && opts.tap.empty()) return fail("virtio-net: a tap attached later needs its name");
    std::optional<Tap> tap;
    Result<Tap> t = opts.tap_fd >= 0 ? Tap::from_fd(opts.tap_fd)
                    : opts.tap.empty() ? Result<Tap>(fail("virtio-net: no tap given"))
                                       : Tap::open_by_name(opts.tap);
    if (t) tap = std::move(*t);
    else if (!opts.defer_if_busy || t.error().sys_errno != EBUSY) return std::unexpected(t.error());
    std::string name = tap ? tap->name() : opts.tap;
    MacAddress mac = opts.mac ? *opts.mac : default_mac(name);
    auto rx = RateLimiter::create();
    if (!rx) return std::unexpected(context(rx.error(), "virtio-net"));
    auto tx = RateLimiter::create();
    if (!tx) return std::unexpected(context(tx.error(), "virtio-net"));
    return std::unique_ptr<VirtioNet>(
        new VirtioNet(std::move(tap), std::move(name), mac, opts.queue_size, std::move(*rx), std::move(*tx)));
}

VirtioNet::VirtioNet(std::optional<Tap> tap, std::string tap_name, MacAddress mac, uint16_t queue_size,
                     std::shared_ptr<RateLimiter> rx, std::shared_ptr<RateLimiter> tx)
    : tap_(std::move(tap)), tap_name_(std::move(tap_name)), queue_size_(queue_size), metrics_(std::make_shared<NetMetrics>()),
      needs_reset_(std::make_shared<std::atomic<bool>>(false)), rx_limiter_(std::move(rx)),
      tx_limiter_(std::move(tx)) {
    features_ = virtq::kFeatureVersion1 | virtq::kFeatureEventIdx | virtq::kFeatureIndirectDesc |
                net::kFeatureMac | net::kFeatureStatus | net::kFeatureCsum | net::kFeatureGuestCsum |
                net::kFeatureHostTso4 | net::kFeatureHostTso6 | net::kFeatureGuestTso4 | net::kFeatureGuestTso6 |
                net::kFeatureMrgRxbuf | net::kFeatureCtrlVq | net::kFeatureGuestAnnounce;
    std::memcpy(config_.mac, mac.data(), mac.size());
    // The tap is always there for the guest; whether its host side is up is the host's
    // business (frames written while it is down are counted as tap errors).
    config_.status = net::kStatusLinkUp;
}

VirtioNet::~VirtioNet() { reset(); }

MacAddress VirtioNet::mac() const {
    MacAddress m;
    std::memcpy(m.data(), config_.mac, m.size());
    return m;
}

void VirtioNet::read_config(uint64_t offset, std::span<uint8_t> data) {
    std::fill(data.begin(), data.end(), uint8_t{0});
    if (offset >= sizeof config_) return;
    std::lock_guard lk(mu_);
    size_t n = std::min<uint64_t>(data.size(), sizeof config_ - offset);
    std::memcpy(data.data(), reinterpret_cast<const uint8_t*>(&config_) + offset, n);
}

void VirtioNet::write_config(uint64_t offset, std::span<const uint8_t> data) {
    // §5.1.4: a VERSION_1 driver does not write the config (the MAC changes through the
    // control queue, which we do not offer).
    log::debug("virtio-net: ignored config write of {} bytes at {}", data.size(), offset);
}

Result<void> VirtioNet::activate(ActivateContext ctx) {
    if (!(ctx.acked_features & virtq::kFeatureVersion1))
        return fail("virtio-net: driver did not accept VIRTIO_F_VERSION_1 (legacy headers are not supported)");
    if (ctx.queues.size() > 3) return fail("virtio-net: {} queues configured, device has 3", ctx.queues.size());
    if (!tap_) return fail("virtio-net: tap '{}' is not attached", tap_name_);
    Activation act{&ctx.mem, &ctx.interrupt, &ctx.events, ctx.acked_features, ctx.queues};
    NetDataPath::Setup s{&ctx.mem, &ctx.interrupt, metrics_, needs_reset_, ctx.acked_features, {}, {},
                         kRxSlots, rx_limiter_, tx_limiter_};
    std::optional<SplitQueue> ctrl;
    for (uint16_t i = 0; i < ctx.queues.size(); ++i) {
        if (!ctx.queues[i].ready) continue;
        auto q = SplitQueue::create(ctx.mem, ctx.queues[i], queue_size_, ctx.acked_features);
        if (!q) return std::unexpected(context(q.error(), fmt::format("virtio-net queue {}", i)));
        (i == net::kRxQueue ? s.rx : i == net::kTxQueue ? s.tx : ctrl).emplace(std::move(*q));
    }
    if (auto r = tap_->set_offload(ctx.acked_features); !r) return std::unexpected(r.error());
    auto path = NetDataPath::create(tap_->fd(), std::move(s));
    if (!path) return std::unexpected(context(path.error(), "virtio-net"));
    std::shared_ptr<NetDataPath> p = *path;
    if (auto r = ctx.events.add(p->event_fd(), EPOLLIN, [p](uint32_t) { p->on_event(); }); !r)
        return std::unexpected(context(r.error(), "virtio-net"));
    auto rx_timer = ctx.events.add(rx_limiter_->timer_fd(), EPOLLIN,
                                   [p](uint32_t) { p->on_limiter_timer(net::kRxQueue); });
    auto tx_timer = rx_timer ? ctx.events.add(tx_limiter_->timer_fd(), EPOLLIN,
                                              [p](uint32_t) { p->on_limiter_timer(net::kTxQueue); })
                             : Result<void>{};
    if (!rx_timer || !tx_timer) {
        if (rx_timer) (void)ctx.events.remove(rx_limiter_->timer_fd());
        (void)ctx.events.remove(p->event_fd());
        p->deactivate();
        (void)p->quiesce();
        return std::unexpected(context(!rx_timer ? rx_timer.error() : tx_timer.error(), "virtio-net rate limiter"));
    }
    {
        std::lock_guard lk(mu_);
        path_ = p;
        events_ = &ctx.events;
        activation_ = std::move(act);
        ctrl_ = std::move(ctrl);
    }
    p->wake();  // the event loop posts the first tap reads (io_uring submits happen there only)
    return {};
}

void VirtioNet::queue_notify(uint16_t index) {
    if (index == net::kCtrlQueue) {
        bool signal;
        VirtioInterrupt* irq = nullptr;
        {
            std::lock_guard lk(mu_);
            signal = serve_ctrl_locked();
            if (activation_) irq = activation_->irq;
        }
        if (signal && irq) {
            NetMetrics::inc(metrics_->interrupts);
            irq->signal_queue(net::kCtrlQueue);
        }
        return;
    }
    std::shared_ptr<NetDataPath> p;
    {
        std::lock_guard lk(mu_);
        p = path_;
    }
    if (!p || index > net::kTxQueue) {
        log::debug("virtio-net: notify for inactive queue {}", index);
        return;
    }
    p->on_notify(index);
}

bool VirtioNet::serve_ctrl_locked() {
    if (!ctrl_ || !activation_ || needs_reset_->load()) return false;
    GuestMemory& mem = *activation_->mem;
    bool used = false;
    for (;;) {
        auto popped = ctrl_->pop(mem);
        if (!popped) {
            NetMetrics::inc(metrics_->queue_errors);
            log::warn("virtio-net: control queue broken, device needs reset: {}", popped.error().what());
            needs_reset_->store(true);
            break;
        }
        if (!popped->has_value()) break;
        uint16_t head;
        uint32_t written = 0;
        NetMetrics::inc(metrics_->ctrl_requests);
        if (auto* bad = std::get_if<MalformedChain>(&**popped)) {
            NetMetrics::inc(metrics_->ctrl_refused);
            log::debug("virtio-net: malformed control chain {}: {}", bad->head, bad->error.what());
            head = bad->head;
        } else {
            const auto& chain = std::get<DescriptorChain>(**popped);
            head = chain.head();
            const uint8_t ack = ctrl_command_locked(chain);
            if (ack != net::kCtrlOk) NetMetrics::inc(metrics_->ctrl_refused);
            // The ack is the chain's one device-writable byte (a chain without one gets no answer).
            if (auto w = chain.write_from(mem, std::span(&ack, 1)); w && *w == 1) written = 1;
        }
        if (auto r = ctrl_->add_used(mem, head, written); !r) {
            NetMetrics::inc(metrics_->queue_errors);
            log::warn("virtio-net: control queue: {}", r.error().what());
            needs_reset_->store(true);
            break;
        }
        used = true;
    }
    if (!used) return false;
    auto notify = ctrl_->should_notify(mem);
    return !notify || *notify;
}

uint8_t VirtioNet::ctrl_command_locked(const DescriptorChain& chain) {
    std::array<uint8_t, 2> cmd{};  // class, command
    auto n = chain.read_to(*activation_->mem, cmd);
    if (!n || *n != cmd.size() || chain.writable_bytes() == 0) return net::kCtrlErr;
    if (cmd[0] == net::kCtrlClassAnnounce && cmd[1] == net::kCtrlAnnounceAck &&
        (activation_->acked & net::kFeatureGuestAnnounce)) {
        config_.status &= static_cast<uint16_t>(~net::kStatusAnnounce);
        NetMetrics::inc(metrics_->announce_acks);
        log::info("virtio-net: the guest announced itself on tap '{}'", tap_name_);
        return net::kCtrlOk;
    }
    log::debug("virtio-net: control command class {} command {} refused", cmd[0], cmd[1]);
    return net::kCtrlErr;
}

void VirtioNet::reset() {
    std::shared_ptr<NetDataPath> p;
    EventRegistry* events;
    {
        std::lock_guard lk(mu_);
        p = std::move(path_);
        path_.reset();
        events = std::exchange(events_, nullptr);
        activation_.reset();
        ctrl_.reset();
        config_.status &= static_cast<uint16_t>(~net::kStatusAnnounce);
    }
    if (p && !stop_path(std::move(p), events)) log::error("virtio-net: tap I/O did not stop on reset; leaking its buffers");
    needs_reset_->store(false);
}

bool VirtioNet::stop_path(std::shared_ptr<NetDataPath> p, EventRegistry* events) {
    p->deactivate();
    // Outside every lock: a registry may wait for a running callback, which takes the path's.
    if (events) {
        (void)events->remove(p->event_fd());
        (void)events->remove(rx_limiter_->timer_fd());
        (void)events->remove(tx_limiter_->timer_fd());
    }
    if (p->quiesce()) return true;
    keep_forever(std::move(p));  // the kernel still holds requests into its buffers
    return false;
}

Result<void> VirtioNet::detach_tap() {
    if (!tap_) return {};
    std::shared_ptr<NetDataPath> p;
    EventRegistry* events;
    {
        std::lock_guard lk(mu_);
        p = path_;
        events = events_;
    }
    if (p) {
        auto pos = p->settle();
        if (!pos) return std::unexpected(context(pos.error(), fmt::format("virtio-net: detaching tap '{}'", tap_name_)));
        {
            std::lock_guard lk(mu_);
            auto ctrl_pos = ctrl_ ? ctrl_->position(0) : Result<QueuePosition>(QueuePosition{});
            if (!ctrl_pos) return std::unexpected(context(ctrl_pos.error(), "virtio-net control queue"));
            if (ctrl_) {
                pos->resize(net::kCtrlQueue + 1);
                (*pos)[net::kCtrlQueue] = *ctrl_pos;
            }
            path_.reset();
            ctrl_.reset();
            events_ = nullptr;
            for (size_t i = 0; i < activation_->queues.size() && i < pos->size(); ++i)
                activation_->queues[i].position = (*pos)[i];
        }
        // Frames read from the tap and not yet delivered go, as in a snapshot (settle_queues).
        if (!stop_path(std::move(p), events)) {
            // The path is gone either way (its buffers kept for the kernel): the device is
            // detached, and attach_tap resumes it where it stopped.
            tap_.reset();
            return fail("virtio-net: tap '{}' I/O did not stop in time; its buffers are kept", tap_name_);
        }
    }
    tap_.reset();
    log::info("virtio-net: tap '{}' detached", tap_name_);
    return {};
}

Result<void> VirtioNet::attach_tap(Tap tap) {
    if (tap_) return fail("virtio-net: tap '{}' is attached already", tap_name_);
    tap_ = std::move(tap);
    std::optional<Activation> act;
    {
        std::lock_guard lk(mu_);
        act = std::exchange(activation_, std::nullopt);
    }
    if (act) {
        auto r = activate({*act->mem, act->acked, act->queues, *act->irq, *act->events});
        if (!r) {
            tap_.reset();
            std::lock_guard lk(mu_);
            activation_ = std::move(act);
            return std::unexpected(context(r.error(), fmt::format("virtio-net: resuming on tap '{}'", tap_name_)));
        }
    }
    log::info("virtio-net: tap '{}' attached", tap_name_);
    return {};
}

bool VirtioNet::needs_reset() const { return needs_reset_->load(); }

Result<void> VirtioNet::announce(int count) {
    VirtioInterrupt* irq = nullptr;
    {
        std::lock_guard lk(mu_);
        if (path_ && ctrl_ && activation_ && (activation_->acked & net::kFeatureGuestAnnounce)) {
            config_.status |= net::kStatusAnnounce;
            irq = activation_->irq;
        }
    }
    if (irq) {  // §5.1.6.5.3: the driver announces and acks
        NetMetrics::inc(metrics_->announce_requests);
        irq->signal_config();
        log::info("virtio-net: asked the guest to announce itself on tap '{}'", tap_name_);
        return {};
    }
    // Ethernet II to ff:ff:ff:ff:ff:ff from the guest's MAC, type 0x8035 (RARP); the ARP-shaped
    // body: hardware type 1 (Ethernet), protocol 0x0800, lengths 6 and 4, opcode 3, sender and
    // target hardware address the guest's MAC, protocol addresses 0; padded to 60 bytes.
    const MacAddress m = mac();
    std::array<uint8_t, 60> frame{};
    std::fill_n(frame.begin(), 6, uint8_t{0xff});
    std::copy(m.begin(), m.end(), frame.begin() + 6);
    const uint8_t head[] = {0x80, 0x35, 0x00, 0x01, 0x08, 0x00, 6, 4, 0x00, 0x03};
    std::copy(std::begin(head), std::end(head), frame.begin() + 12);
    std::copy(m.begin(), m.end(), frame.begin() + 22);
    std::copy(m.begin(), m.end(), frame.begin() + 32);
    std::array<uint8_t, Tap::kVnetHdrBytes> hdr{};  // no offloads
    iovec iov[2] = {{hdr.data(), hdr.size()}, {frame.data(), frame.size()}};
    if (!tap_) return fail("virtio-net: tap '{}' is not attached; the guest's MAC is not announced", tap_name_);
    for (int i = 0; i < count; ++i)
        if (::writev(tap_->fd(), iov, 2) < 0 && errno != EAGAIN)
            return fail_errno("virtio-net: announcing the guest's MAC on tap '{}'", tap_name_);
    return {};
}

Result<QueuePositions> VirtioNet::settle_queues() {
    std::shared_ptr<NetDataPath> p;
    {
        std::lock_guard lk(mu_);
        p = path_;
    }
    if (!p) return QueuePositions(3);
    auto pos = p->settle();
    if (!pos) return pos;
    pos->resize(net::kCtrlQueue + 1);
    std::lock_guard lk(mu_);
    if (ctrl_) {  // commands are answered as they are popped: nothing is ever in flight
        auto c = ctrl_->position(0);
        if (!c) return std::unexpected(context(c.error(), "virtio-net control queue"));
        (*pos)[net::kCtrlQueue] = *c;
    }
    return pos;
}

}  // namespace kestrel
