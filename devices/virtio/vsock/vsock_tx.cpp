#include "devices/virtio/vsock/vsock_core.hpp"

#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <variant>

#include "vmm/base/log.hpp"

namespace kestrel {

using vsock::Connection;
using vsock::ConnKey;
using vsock::ConnState;
using vsock::Header;
using vsock::Op;
using M = VsockMetrics;
using vsock::bytes_of;
using vsock::kMaxIovecs;

void VirtioVsock::Core::account_to_host(Connection& c, size_t n) {
    size_t text = std::min<size_t>(n, c.unaccounted_to_host);
    c.unaccounted_to_host -= text;
    c.fwd_cnt += static_cast<uint32_t>(n - text);
    M::inc(metrics.bytes_to_host, n - text);
}

// Writes buffered bytes to the unix socket. Returns false if the connection was closed.
bool VirtioVsock::Core::flush_to_host(Connection& c) {
    while (c.buffered_to_host() > 0 && !c.host_hung_up) {
        ssize_t n = ::send(c.fd.get(), c.to_host.data() + c.to_host_head,
                           c.buffered_to_host(), MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN) break;
            log::debug("virtio-vsock: write to host socket {}:{}: {}", c.key.local_port,
                       c.key.peer_port, std::strerror(errno));
            reset_conn(c);
            return false;
        }
        account_to_host(c, static_cast<size_t>(n));
        c.consume_to_host(static_cast<size_t>(n));
    }
    return after_host_progress(c);
}

// After bytes reached the host: credit update, deferred shutdown/close.
bool VirtioVsock::Core::after_host_progress(Connection& c) {
    if (c.buffered_to_host() == 0) {
        if (c.state == ConnState::Closing || (c.guest_shut_send && c.host_eof)) {
            close_conn(c, true);
            return false;
        }
        if (c.guest_shut_send && !c.host_write_shut) {
            ::shutdown(c.fd.get(), SHUT_WR);
            c.host_write_shut = true;
        }
    }
    uint32_t threshold = std::min(kCreditUpdateThreshold, c.buf_alloc / 2);
    if (c.fwd_cnt != c.last_sent_fwd_cnt && c.guest_view_of_free() < threshold) {
        c.control.credit_update = true;
        enqueue_control(c);
    }
    return update_interest(c);
}

// An RW payload: straight to the socket when nothing is queued before it, the rest
// copied into the connection's buffer (bounded by the credit check done by the caller).
bool VirtioVsock::Core::deliver_to_host(Connection& c, const DescriptorChain& chain, uint32_t len) {
    c.rx_cnt += len;
    size_t sent = 0;
    if (c.buffered_to_host() == 0 && !c.host_hung_up) {
        auto iov = chain.readable_iovecs(*mem, vsock::kHeaderBytes, len);
        if (iov) {
            if (iov->size() > kMaxIovecs) iov->resize(kMaxIovecs);
            msghdr msg{};
            msg.msg_iov = iov->data();
            msg.msg_iovlen = iov->size();
            ssize_t n;
            do {
                n = ::sendmsg(c.fd.get(), &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
            } while (n < 0 && errno == EINTR);
            if (n < 0 && errno != EAGAIN) {
                log::debug("virtio-vsock: write to host socket {}:{}: {}", c.key.local_port,
                           c.key.peer_port, std::strerror(errno));
                reset_conn(c);
                return false;
            }
            if (n > 0) {
                sent = static_cast<size_t>(n);
                account_to_host(c, sent);
            }
        }
    }
    if (sent < len) {
        size_t rest = len - sent;
        size_t old = c.to_host.size();
        c.append_to_host(nullptr, 0);  // compacts first, so `old` below is stable
        old = c.to_host.size();
        c.to_host.resize(old + rest);
        auto r = chain.read_to(*mem, std::span(c.to_host.data() + old, rest),
                               vsock::kHeaderBytes + sent);
        if (!r || *r != rest) {
            log::warn("virtio-vsock: reading tx payload failed");
            c.to_host.resize(old);
            reset_conn(c);
            return false;
        }
    }
    return after_host_progress(c);
}

void VirtioVsock::Core::reply_rst(const Header& h) {
    if (static_cast<Op>(h.op) == Op::Rst) return;  // never answer an RST with an RST
    queue_rst(h.dst_port, h.src_port);
}

Connection* VirtioVsock::Core::find(const ConnKey& k) {
    auto it = conns.find(k);
    return it == conns.end() ? nullptr : it->second.get();
}

void VirtioVsock::Core::guest_connect(const Header& h) {
    ConnKey key{h.dst_port, h.src_port};
    if (total_connections() >= max_connections) {
        M::inc(metrics.connections_refused);
        log::debug("virtio-vsock: guest connect to port {}: connection cap {} reached",
                   key.local_port, max_connections);
        return queue_rst(key.local_port, key.peer_port);
    }
    std::string path = fmt::format("{}_{}", listener.path(), key.local_port);
    auto fd = connect_unix(path);
    if (!fd) {
        M::inc(metrics.connections_refused);
        log::debug("virtio-vsock: guest connect to port {}: {}", key.local_port,
                   fd.error().what());
        return queue_rst(key.local_port, key.peer_port);
    }
    auto c = std::make_unique<Connection>();
    c->key = key;
    c->fd = std::move(*fd);
    c->state = ConnState::Established;
    c->buf_alloc = buf_alloc;
    c->peer_buf_alloc = h.buf_alloc;
    c->peer_fwd_cnt = h.fwd_cnt;
    c->control.response = true;
    Connection& ref = *c;
    by_fd[ref.fd.get()] = key;
    conns[key] = std::move(c);
    M::inc(metrics.guest_connections_opened);
    enqueue_control(ref);
    update_interest(ref);
}

void VirtioVsock::Core::guest_shutdown(Connection& c, uint32_t flags) {
    if (flags & vsock::kShutdownSend) c.guest_shut_send = true;
    if (flags & vsock::kShutdownReceive) c.guest_shut_receive = true;
    if (c.guest_shut_send && c.guest_shut_receive) c.state = ConnState::Closing;
    if (c.state == ConnState::Closing && c.host_hung_up) return close_conn(c, true);
    (void)flush_to_host(c);
}

void VirtioVsock::Core::handle_packet(const DescriptorChain& chain) {
    if (chain.readable_bytes() < vsock::kHeaderBytes) {
        M::inc(metrics.short_header);
        return;
    }
    Header h{};  // the one read of the header; only this copy is used
    if (auto r = chain.read_to(*mem, bytes_of(h), 0); !r || *r != sizeof h) {
        M::inc(metrics.short_header);
        return;
    }
    if (h.dst_cid != vsock::kHostCid) {
        M::inc(metrics.wrong_dst_cid);
        return;
    }
    if (h.src_cid != guest_cid) {
        M::inc(metrics.wrong_src_cid);
        return;
    }
    ConnKey key{h.dst_port, h.src_port};
    Connection* c = find(key);
    uint64_t payload = chain.readable_bytes() - vsock::kHeaderBytes;
    if (h.len > payload || h.len > kMaxPayload) {
        M::inc(metrics.bad_len);
        log::debug("virtio-vsock: packet len {} but {} payload bytes", uint32_t{h.len},
                   payload);
        // Bytes of the stream are lost: the connection cannot go on.
        if (c) reset_conn(*c);
        return;
    }
    M::inc(metrics.packets_from_guest);
    if (h.type != vsock::kTypeStream) {
        M::inc(metrics.bad_type);
        if (c) reset_conn(*c);
        else reply_rst(h);
        return;
    }
    Op op = static_cast<Op>(h.op);
    if (op == Op::Request) {
        if (c) {  // a second REQUEST for a live connection: both ends are confused
            reset_conn(*c);
            return;
        }
        return guest_connect(h);
    }
    if (!c) {
        if (op != Op::Rst && op != Op::Response && op != Op::Shutdown && op != Op::Rw &&
            op != Op::CreditUpdate && op != Op::CreditRequest)
            M::inc(metrics.bad_op);
        else if (op != Op::Rst)
            M::inc(metrics.unknown_connection);
        return reply_rst(h);
    }
    // §5.10.6.3: every packet carries the sender's current buffer state.
    c->peer_buf_alloc = h.buf_alloc;
    c->peer_fwd_cnt = h.fwd_cnt;
    switch (op) {
    case Op::Response:
        if (c->state != ConnState::Connecting) return reset_conn(*c);
        c->state = ConnState::Established;
        M::inc(metrics.host_connections_opened);
        {
            std::string ok = vsock::ok_line(c->key.local_port);
            c->append_to_host(reinterpret_cast<const uint8_t*>(ok.data()), ok.size());
            c->unaccounted_to_host += ok.size();
        }
        (void)flush_to_host(*c);
        return;
    case Op::Rst:
        if (c->state == ConnState::Connecting) {
            M::inc(metrics.connections_refused);
            return close_conn(*c, false);
        }
        if (c->state == ConnState::Established) M::inc(metrics.connections_reset);
        return close_conn(*c, false);
    case Op::Shutdown:
        if (c->state == ConnState::Connecting) return reset_conn(*c);
        return guest_shutdown(*c, h.flags);
    case Op::Rw:
        if (c->state != ConnState::Established || c->guest_shut_send) return reset_conn(*c);
        if (!c->fits_our_credit(h.len)) {
            M::inc(metrics.credit_violation);
            log::debug("virtio-vsock: {}:{}: {} bytes beyond the credit granted",
                       c->key.local_port, c->key.peer_port, uint32_t{h.len});
            return reset_conn(*c);
        }
        if (h.len > 0) (void)deliver_to_host(*c, chain, h.len);
        return;
    case Op::CreditUpdate:
        (void)update_interest(*c);  // more credit: maybe start reading again
        return;
    case Op::CreditRequest:
        c->control.credit_update = true;
        enqueue_control(*c);
        return;
    default:
        M::inc(metrics.bad_op);
        return reset_conn(*c);
    }
}

void VirtioVsock::Core::process_tx() {
    while (!needs_reset) {
        auto popped = tx->pop(*mem);
        if (!popped) return queue_broken("tx queue", popped.error());
        if (!popped->has_value()) break;
        uint16_t head;
        if (auto* bad = std::get_if<MalformedChain>(&**popped)) {
            M::inc(metrics.malformed_chains);
            log::debug("virtio-vsock: malformed tx chain {}: {}", bad->head, bad->error.what());
            head = bad->head;
        } else {
            const auto& chain = std::get<DescriptorChain>(**popped);
            head = chain.head();
            handle_packet(chain);
            if (needs_reset) return;
        }
        // The device writes nothing into tx buffers (§5.10.6.4).
        if (auto r = tx->add_used(*mem, head, 0); !r) return queue_broken("tx queue", r.error());
        tx_used = true;
    }
}
}  // namespace kestrel
