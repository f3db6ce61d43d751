#include "devices/virtio/vsock/vsock_core.hpp"

#include <poll.h>
#include <sys/epoll.h>

#include <vector>

#include "vmm/base/log.hpp"

namespace kestrel {

using vsock::Connection;
using vsock::ConnKey;
using vsock::ConnState;
using vsock::Header;
using vsock::Op;
using M = VsockMetrics;

short vsock::poll_now(int fd) {
    pollfd p{fd, POLLIN | POLLOUT, 0};
    if (::poll(&p, 1, 0) <= 0) return 0;
    return p.revents;
}

Header VirtioVsock::Core::header_to_guest(uint32_t local_port, uint32_t peer_port, Op op) const {
    Header h{};
    h.src_cid = vsock::kHostCid;
    h.dst_cid = guest_cid;
    h.src_port = local_port;
    h.dst_port = peer_port;
    h.type = vsock::kTypeStream;
    h.op = static_cast<uint16_t>(op);
    return h;
}

// Every packet to the guest carries this connection's buffer state (§5.10.6.3).
Header VirtioVsock::Core::header_for(Connection& c, Op op) {
    Header h = header_to_guest(c.key.local_port, c.key.peer_port, op);
    h.buf_alloc = c.buf_alloc;
    h.fwd_cnt = c.fwd_cnt;
    c.last_sent_fwd_cnt = c.fwd_cnt;
    return h;
}

void VirtioVsock::Core::queue_broken(const char* which, const Error& e) {
    M::inc(metrics.queue_errors);
    log::warn("virtio-vsock: {} broken, device needs reset: {}", which, e.what());
    needs_reset = true;
    unregister_all();  // level-triggered sockets would spin while nothing serves them
}

void VirtioVsock::Core::add_used_rx(uint16_t head, uint32_t len) {
    if (auto r = rx->add_used(*mem, head, len); !r) return queue_broken("rx queue", r.error());
    rx_used = true;
}

Result<void> VirtioVsock::Core::register_fd(int fd, uint32_t ev) {
    std::weak_ptr<Core> weak = weak_from_this();
    return events->add(fd, ev, [weak, fd](uint32_t revents) {
        if (auto core = weak.lock()) core->on_event(fd, revents);
    });
}

void VirtioVsock::Core::unregister_fd(int fd) {
    if (auto r = events->remove(fd); !r)
        log::warn("virtio-vsock: unregister fd {}: {}", fd, r.error().what());
}

void VirtioVsock::Core::unregister_all() {
    if (!events) return;
    for (auto& [key, c] : conns)
        if (c->registered) {
            unregister_fd(c->fd.get());
            c->registered = false;
        }
    for (auto& [fd, p] : pending_host) unregister_fd(fd);
    if (listener_registered) unregister_fd(listener.fd());
    listener_registered = false;
}

void VirtioVsock::Core::queue_rst(uint32_t local_port, uint32_t peer_port) {
    if (rst_queue.size() >= kMaxPendingRsts) {
        M::inc(metrics.rst_queue_full);
        return;
    }
    rst_queue.push_back(header_to_guest(local_port, peer_port, Op::Rst));
}

void VirtioVsock::Core::close_conn(Connection& c, bool send_rst) {
    if (c.registered) unregister_fd(c.fd.get());
    if (send_rst) queue_rst(c.key.local_port, c.key.peer_port);
    M::inc(metrics.connections_closed);
    by_fd.erase(c.fd.get());
    conns.erase(c.key);  // destroys c and closes its socket
}

// An open connection ended abnormally: tell the guest (RST) and close the host side.
void VirtioVsock::Core::reset_conn(Connection& c) {
    M::inc(metrics.connections_reset);
    close_conn(c, true);
}

void VirtioVsock::Core::enqueue_control(Connection& c) {
    if (c.in_control_queue) return;
    c.in_control_queue = true;
    control_queue.push_back(c.key);
}

// Brings the epoll registration in line with what the connection can do now. Returns
// false if the connection had to be closed.
bool VirtioVsock::Core::update_interest(Connection& c) {
    bool want_in = c.state == ConnState::Established && !c.host_eof && !c.guest_shut_receive &&
                   !c.control.response && !c.control.request && c.peer_free() > 0 &&
                   !rx_starved && !needs_reset;
    bool want_out = c.buffered_to_host() > 0 && !c.host_hung_up && !needs_reset;
    uint32_t ev = (want_in ? EPOLLIN : 0u) | (want_out ? EPOLLOUT : 0u);
    // With no interest, stay registered only where a hang-up must be noticed: a program
    // waiting for "OK", or one that already sent EOF. (Hang-ups are always reported, so a
    // registration while we are not reading would spin once the peer is gone.)
    bool want_registered = ev != 0 || (!c.host_hung_up && !needs_reset &&
                                       (c.state == ConnState::Connecting || c.host_eof));
    if (want_registered == c.registered && (!want_registered || ev == c.registered_events))
        return true;
    if (c.registered) unregister_fd(c.fd.get());
    c.registered = false;
    if (want_registered) {
        if (auto r = register_fd(c.fd.get(), ev); !r) {
            log::warn("virtio-vsock: watch connection {}:{}: {}", c.key.local_port,
                      c.key.peer_port, r.error().what());
            reset_conn(c);
            return false;
        }
        c.registered = true;
        c.registered_events = ev;
    }
    return true;
}

void VirtioVsock::Core::update_all_interests() {
    std::vector<ConnKey> keys;
    for (auto& [k, c] : conns) keys.push_back(k);
    for (auto& k : keys)
        if (auto it = conns.find(k); it != conns.end()) update_interest(*it->second);
}

void VirtioVsock::Core::set_rx_starved(bool starved) {
    if (rx_starved == starved) return;
    rx_starved = starved;
    update_all_interests();
}

void VirtioVsock::Core::on_event(int fd, uint32_t revents) {
    VirtioInterrupt* to_signal = nullptr;
    bool sig_rx = false, sig_tx = false;
    {
        std::lock_guard lk(mu);
        if (!active || needs_reset) return;
        rx_used = tx_used = false;
        if (listener_registered && fd == listener.fd()) {
            on_listener();
        } else if (pending_host.count(fd)) {
            on_pending(fd);
        } else if (auto it = by_fd.find(fd); it != by_fd.end()) {
            const ConnKey key = it->second;
            fill_rx();  // control packets go before data
            if (auto* c = find(key)) on_connection(*c, revents);
        }
        fill_rx();
        collect_signals(to_signal, sig_rx, sig_tx);
    }
    raise(to_signal, sig_rx, sig_tx);
}

void VirtioVsock::Core::collect_signals(VirtioInterrupt*& to_signal, bool& sig_rx, bool& sig_tx) {
    auto check = [&](std::optional<SplitQueue>& q, bool used) {
        if (!used || !q) return false;
        auto n = q->should_notify(*mem);
        return !n || *n;
    };
    sig_rx = check(rx, rx_used);
    sig_tx = check(tx, tx_used);
    rx_used = tx_used = false;
    to_signal = irq;
    if (sig_rx) M::inc(metrics.interrupts);
    if (sig_tx) M::inc(metrics.interrupts);
}

void VirtioVsock::Core::raise(VirtioInterrupt* irq, bool sig_rx, bool sig_tx) {
    if (!irq) return;
    if (sig_rx) irq->signal_queue(vsock::kRxQueue);
    if (sig_tx) irq->signal_queue(vsock::kTxQueue);
}

void VirtioVsock::Core::reset_locked() {
    if (events) unregister_all();
    conns.clear();
    by_fd.clear();
    pending_host.clear();
    control_queue.clear();
    rst_queue.clear();
    rx_stash.clear();
    rx.reset();
    tx.reset();
    event.reset();
    rx_starved = false;
    active = false;
    needs_reset = false;
    mem = nullptr;
    irq = nullptr;
    events = nullptr;
}
}  // namespace kestrel
