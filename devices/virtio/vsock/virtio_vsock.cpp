#include "devices/virtio/vsock/virtio_vsock.hpp"

#include <limits.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <deque>
#include <map>
#include <mutex>
#include <optional>
#include <variant>

#include "devices/virtio/queue/split_queue.hpp"
#include "devices/virtio/queue/virtq_spec.hpp"
#include "devices/virtio/vsock/unix_socket.hpp"
#include "devices/virtio/vsock/vsock_connection.hpp"
#include "vmm/base/log.hpp"

namespace kestrel {

using vsock::Connection;
using vsock::ConnKey;
using vsock::ConnState;
using vsock::Header;
using vsock::Op;
using M = VsockMetrics;

namespace {

constexpr size_t kMaxPacketsPerPump = 64;   // fairness between connections per callback
constexpr size_t kMaxAcceptsPerEvent = 16;
constexpr size_t kMaxIovecs = IOV_MAX;

std::span<uint8_t> bytes_of(Header& h) {
    return std::span(reinterpret_cast<uint8_t*>(&h), sizeof h);
}
std::span<const uint8_t> bytes_of(const Header& h) {
    return std::span(reinterpret_cast<const uint8_t*>(&h), sizeof h);
}

// The peer's hang-up or error, re-read now: an epoll event can be stale when an fd number
// was closed and reused within one epoll_wait batch.
short poll_now(int fd) {
    pollfd p{fd, POLLIN | POLLOUT, 0};
    if (::poll(&p, 1, 0) <= 0) return 0;
    return p.revents;
}

}  // namespace

struct VirtioVsock::Core : std::enable_shared_from_this<Core> {
    Core(UnixListener l, const VirtioVsockOptions& o)
        : listener(std::move(l)),
          guest_cid(o.guest_cid),
          buf_alloc(o.buf_alloc),
          max_connections(o.max_connections),
          queue_size(o.queue_size) {}

    std::mutex mu;
    VsockMetrics metrics;
    UnixListener listener;
    const uint64_t guest_cid;
    const uint32_t buf_alloc;
    const uint32_t max_connections;
    const uint16_t queue_size;

    // Activation.
    bool active = false;
    bool needs_reset = false;
    GuestMemory* mem = nullptr;
    VirtioInterrupt* irq = nullptr;
    EventRegistry* events = nullptr;
    std::optional<SplitQueue> rx, tx, event;
    bool listener_registered = false;

    // rx buffers: popped but unused (a read found nothing after all), and whether the ring
    // ran dry (then no socket is read until the driver adds buffers).
    std::deque<DescriptorChain> rx_stash;
    bool rx_starved = false;
    bool rx_used = false, tx_used = false;

    std::map<ConnKey, std::unique_ptr<Connection>> conns;
    std::map<int, ConnKey> by_fd;
    struct PendingHost {
        UniqueFd fd;
        std::string line;
    };
    std::map<int, PendingHost> pending_host;  // accepted, CONNECT line not complete yet
    std::deque<ConnKey> control_queue;
    std::deque<Header> rst_queue;
    uint32_t next_host_port = kHostPortBase;

    // --- plumbing -------------------------------------------------------------------------
    size_t total_connections() const { return conns.size() + pending_host.size(); }

    Header header_to_guest(uint32_t local_port, uint32_t peer_port, Op op) const {
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
    Header header_for(Connection& c, Op op) {
        Header h = header_to_guest(c.key.local_port, c.key.peer_port, op);
        h.buf_alloc = c.buf_alloc;
        h.fwd_cnt = c.fwd_cnt;
        c.last_sent_fwd_cnt = c.fwd_cnt;
        return h;
    }

    void queue_broken(const char* which, const Error& e) {
        M::inc(metrics.queue_errors);
        log::warn("virtio-vsock: {} broken, device needs reset: {}", which, e.what());
        needs_reset = true;
        unregister_all();  // level-triggered sockets would spin while nothing serves them
    }

    void add_used_rx(uint16_t head, uint32_t len) {
        if (auto r = rx->add_used(*mem, head, len); !r) return queue_broken("rx queue", r.error());
        rx_used = true;
    }

    Result<void> register_fd(int fd, uint32_t ev) {
        std::weak_ptr<Core> weak = weak_from_this();
        return events->add(fd, ev, [weak, fd](uint32_t revents) {
            if (auto core = weak.lock()) core->on_event(fd, revents);
        });
    }
    void unregister_fd(int fd) {
        if (auto r = events->remove(fd); !r)
            log::warn("virtio-vsock: unregister fd {}: {}", fd, r.error().what());
    }

    void unregister_all() {
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

    // --- connection lifetime ----------------------------------------------------------------
    void queue_rst(uint32_t local_port, uint32_t peer_port) {
        if (rst_queue.size() >= kMaxPendingRsts) {
            M::inc(metrics.rst_queue_full);
            return;
        }
        rst_queue.push_back(header_to_guest(local_port, peer_port, Op::Rst));
    }

    void close_conn(Connection& c, bool send_rst) {
        if (c.registered) unregister_fd(c.fd.get());
        if (send_rst) queue_rst(c.key.local_port, c.key.peer_port);
        M::inc(metrics.connections_closed);
        by_fd.erase(c.fd.get());
        conns.erase(c.key);  // destroys c and closes its socket
    }

    // An open connection ended abnormally: tell the guest (RST) and close the host side.
    void reset_conn(Connection& c) {
        M::inc(metrics.connections_reset);
        close_conn(c, true);
    }

    void enqueue_control(Connection& c) {
        if (c.in_control_queue) return;
        c.in_control_queue = true;
        control_queue.push_back(c.key);
    }

    // Brings the epoll registration in line with what the connection can do now. Returns
    // false if the connection had to be closed.
    bool update_interest(Connection& c) {
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

    void update_all_interests() {
        std::vector<ConnKey> keys;
        for (auto& [k, c] : conns) keys.push_back(k);
        for (auto& k : keys)
            if (auto it = conns.find(k); it != conns.end()) update_interest(*it->second);
    }

    void set_rx_starved(bool starved) {
        if (rx_starved == starved) return;
        rx_starved = starved;
        update_all_interests();
    }

    // --- guest rx buffers -------------------------------------------------------------------
    std::optional<DescriptorChain> next_rx_chain() {
        if (!rx_stash.empty()) {
            DescriptorChain c = std::move(rx_stash.front());
            rx_stash.pop_front();
            return c;
        }
        while (!needs_reset) {
            auto popped = rx->pop(*mem);
            if (!popped) {
                queue_broken("rx queue", popped.error());
                return std::nullopt;
            }
            if (!popped->has_value()) return std::nullopt;
            if (auto* bad = std::get_if<MalformedChain>(&**popped)) {
                M::inc(metrics.malformed_chains);
                log::debug("virtio-vsock: malformed rx chain {}: {}", bad->head, bad->error.what());
                add_used_rx(bad->head, 0);
                continue;
            }
            auto& chain = std::get<DescriptorChain>(**popped);
            if (chain.writable_bytes() < vsock::kHeaderBytes) {
                M::inc(metrics.rx_buffer_too_small);
                add_used_rx(chain.head(), 0);
                continue;
            }
            return std::move(chain);
        }
        return std::nullopt;
    }

    bool put_packet(const DescriptorChain& chain, const Header& h) {
        auto w = chain.write_from(*mem, bytes_of(h), 0);
        if (!w || *w != sizeof h) {
            // The chain was validated when popped and guest RAM does not move: a host bug.
            log::warn("virtio-vsock: writing rx header failed");
            add_used_rx(chain.head(), 0);
            return false;
        }
        add_used_rx(chain.head(), static_cast<uint32_t>(sizeof h + h.len));
        M::inc(metrics.packets_to_guest);
        return true;
    }

    // Sends queued RSTs and connection control packets while rx buffers last.
    void fill_rx() {
        if (!active || needs_reset) return;
        std::vector<ConnKey> touched;
        while (!rst_queue.empty() || !control_queue.empty()) {
            if (rst_queue.empty()) {
                auto it = conns.find(control_queue.front());
                if (it == conns.end() || !it->second->control.any()) {
                    if (it != conns.end()) it->second->in_control_queue = false;
                    control_queue.pop_front();
                    continue;
                }
            }
            auto chain = next_rx_chain();
            if (!chain) {
                if (!needs_reset) rx_starved = true;  // interests follow below
                break;
            }
            if (!rst_queue.empty()) {
                put_packet(*chain, rst_queue.front());
                rst_queue.pop_front();
                continue;
            }
            Connection& c = *conns.find(control_queue.front())->second;
            auto& pc = c.control;
            Header h;
            if (pc.request) {
                h = header_for(c, Op::Request);
                pc.request = false;
            } else if (pc.response) {
                h = header_for(c, Op::Response);
                pc.response = false;
            } else if (pc.credit_update) {
                h = header_for(c, Op::CreditUpdate);
                pc.credit_update = false;
                M::inc(metrics.credit_updates_sent);
            } else {
                h = header_for(c, Op::Shutdown);
                h.flags = pc.shutdown_flags;
                pc.shutdown_flags = 0;
            }
            put_packet(*chain, h);
            touched.push_back(c.key);
        }
        if (rx_starved) {
            update_all_interests();
            return;
        }
        for (auto& k : touched)
            if (auto it = conns.find(k); it != conns.end()) update_interest(*it->second);
    }

    // --- host -> guest ----------------------------------------------------------------------
    // Reads the unix socket straight into rx buffers while credit and buffers last.
    // Returns false if the connection was closed.
    bool pump_to_guest(Connection& c) {
        const ConnKey key = c.key;
        for (size_t i = 0; i < kMaxPacketsPerPump; ++i) {
            if (c.state != ConnState::Established || c.host_eof || c.guest_shut_receive ||
                c.control.response || needs_reset)
                break;
            uint32_t credit = c.peer_free();
            if (credit == 0) break;
            auto chain = next_rx_chain();
            if (!chain) {
                if (!needs_reset) set_rx_starved(true);
                return conns.count(key) != 0;
            }
            uint64_t room = std::min<uint64_t>({chain->writable_bytes() - vsock::kHeaderBytes,
                                                credit, kMaxPayload});
            if (room == 0) {  // header-sized buffer: useless for data
                M::inc(metrics.rx_buffer_too_small);
                add_used_rx(chain->head(), 0);
                continue;
            }
            auto iov = chain->writable_iovecs(*mem, vsock::kHeaderBytes, room);
            if (!iov) {
                log::warn("virtio-vsock: rx iovecs: {}", iov.error().what());
                add_used_rx(chain->head(), 0);
                continue;
            }
            if (iov->size() > kMaxIovecs) iov->resize(kMaxIovecs);
            ssize_t n;
            do {
                n = ::readv(c.fd.get(), iov->data(), static_cast<int>(iov->size()));
            } while (n < 0 && errno == EINTR);
            if (n < 0) {
                rx_stash.push_front(std::move(*chain));
                if (errno == EAGAIN) break;
                log::debug("virtio-vsock: read from host socket {}:{}: {}", c.key.local_port,
                           c.key.peer_port, std::strerror(errno));
                reset_conn(c);
                return false;
            }
            if (n == 0) {
                rx_stash.push_front(std::move(*chain));
                return host_eof(c);
            }
            Header h = header_for(c, Op::Rw);
            h.len = static_cast<uint32_t>(n);
            c.tx_cnt += h.len;
            M::inc(metrics.bytes_to_guest, h.len);
            put_packet(*chain, h);
        }
        return update_interest(c);
    }

    bool host_eof(Connection& c) {
        c.host_eof = true;
        if (poll_now(c.fd.get()) & POLLHUP) c.host_hung_up = true;
        // Host gone for good, or both sides are done sending: end the connection.
        if (c.host_hung_up || (c.guest_shut_send && c.buffered_to_host() == 0)) {
            close_conn(c, true);
            return false;
        }
        c.control.shutdown_flags |= vsock::kShutdownSend;
        enqueue_control(c);
        return update_interest(c);
    }

    // --- guest -> host ----------------------------------------------------------------------
    void account_to_host(Connection& c, size_t n) {
        size_t text = std::min<size_t>(n, c.unaccounted_to_host);
        c.unaccounted_to_host -= text;
        c.fwd_cnt += static_cast<uint32_t>(n - text);
        M::inc(metrics.bytes_to_host, n - text);
    }

    // Writes buffered bytes to the unix socket. Returns false if the connection was closed.
    bool flush_to_host(Connection& c) {
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
    bool after_host_progress(Connection& c) {
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
    bool deliver_to_host(Connection& c, const DescriptorChain& chain, uint32_t len) {
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

    // --- guest tx packets -------------------------------------------------------------------
    void reply_rst(const Header& h) {
        if (static_cast<Op>(h.op) == Op::Rst) return;  // never answer an RST with an RST
        queue_rst(h.dst_port, h.src_port);
    }

    Connection* find(const ConnKey& k) {
        auto it = conns.find(k);
        return it == conns.end() ? nullptr : it->second.get();
    }

    void guest_connect(const Header& h) {
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

    void guest_shutdown(Connection& c, uint32_t flags) {
        if (flags & vsock::kShutdownSend) c.guest_shut_send = true;
        if (flags & vsock::kShutdownReceive) c.guest_shut_receive = true;
        if (c.guest_shut_send && c.guest_shut_receive) c.state = ConnState::Closing;
        if (c.state == ConnState::Closing && c.host_hung_up) return close_conn(c, true);
        (void)flush_to_host(c);
    }

    void handle_packet(const DescriptorChain& chain) {
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

    void process_tx() {
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

    // --- host-side sockets ------------------------------------------------------------------
    void on_listener() {
        for (size_t i = 0; i < kMaxAcceptsPerEvent; ++i) {
            auto fd = listener.accept();
            if (!fd) {
                log::warn("virtio-vsock: {}", fd.error().what());
                return;
            }
            if (!fd->valid()) return;
            if (total_connections() >= max_connections) {
                M::inc(metrics.connections_refused);
                log::debug("virtio-vsock: host connection refused: cap {} reached",
                           max_connections);
                continue;  // closing it tells the program at once
            }
            int raw = fd->get();
            if (auto r = register_fd(raw, EPOLLIN); !r) {
                log::warn("virtio-vsock: watch host connection: {}", r.error().what());
                continue;
            }
            pending_host[raw] = PendingHost{std::move(*fd), {}};
        }
    }

    void drop_pending(int fd) {
        unregister_fd(fd);
        pending_host.erase(fd);
        M::inc(metrics.connections_refused);
    }

    // Reads the CONNECT line a byte at a time, so nothing after '\n' is consumed here.
    void on_pending(int fd) {
        auto& p = pending_host.at(fd);
        for (;;) {
            char ch;
            ssize_t n = ::read(fd, &ch, 1);
            if (n < 0 && errno == EINTR) continue;
            if (n < 0 && errno == EAGAIN) return;
            if (n <= 0) return drop_pending(fd);  // closed or failed before finishing
            if (ch == '\n') break;
            p.line.push_back(ch);
            if (p.line.size() > kMaxConnectLineBytes) {
                log::debug("virtio-vsock: host CONNECT line too long");
                return drop_pending(fd);
            }
        }
        auto port = vsock::parse_connect_line(p.line);
        if (!port) {
            log::debug("virtio-vsock: bad host command '{}'", p.line);
            return drop_pending(fd);
        }
        std::optional<uint32_t> local;
        for (uint32_t tries = 0; tries <= max_connections + 1 && !local; ++tries) {
            uint32_t candidate = next_host_port;
            next_host_port = next_host_port >= 0xfffffffe ? kHostPortBase : next_host_port + 1;
            if (!conns.count(ConnKey{candidate, *port})) local = candidate;
        }
        if (!local) return drop_pending(fd);
        auto c = std::make_unique<Connection>();
        c->key = ConnKey{*local, *port};
        c->fd = std::move(p.fd);
        c->state = ConnState::Connecting;
        c->host_initiated = true;
        c->buf_alloc = buf_alloc;
        c->control.request = true;
        // Still registered for EPOLLIN under the same fd number: take that over.
        c->registered = true;
        c->registered_events = EPOLLIN;
        pending_host.erase(fd);
        Connection& ref = *c;
        by_fd[fd] = ref.key;
        conns[ref.key] = std::move(c);
        enqueue_control(ref);
        update_interest(ref);
    }

    void on_connection(Connection& c, uint32_t revents) {
        if (revents & (EPOLLHUP | EPOLLERR)) {
            short now = poll_now(c.fd.get());
            if (now & POLLERR) return reset_conn(c);
            if (now & POLLHUP) {
                c.host_hung_up = true;
                // Nothing more can reach the host; what the guest sent is lost with it.
                c.to_host.clear();
                c.to_host_head = 0;
                c.unaccounted_to_host = 0;
                if (c.state == ConnState::Connecting) return close_conn(c, true);
                if (c.host_eof || c.guest_shut_receive || c.state == ConnState::Closing)
                    return close_conn(c, true);
            }
        }
        if (c.buffered_to_host() > 0 && !flush_to_host(c)) return;
        if (!pump_to_guest(c)) return;
        (void)update_interest(c);
    }

    void on_event(int fd, uint32_t revents) {
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

    void collect_signals(VirtioInterrupt*& to_signal, bool& sig_rx, bool& sig_tx) {
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

    static void raise(VirtioInterrupt* irq, bool sig_rx, bool sig_tx) {
        if (!irq) return;
        if (sig_rx) irq->signal_queue(vsock::kRxQueue);
        if (sig_tx) irq->signal_queue(vsock::kTxQueue);
    }

    void reset_locked() {
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
};

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
    std::lock_guard lk(core_->mu);
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
            break;  // buffers kept for a transport-reset event kestrel never sends
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
