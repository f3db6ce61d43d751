#include "devices/virtio/vsock/vsock_core.hpp"

#include <poll.h>
#include <sys/uio.h>

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
using vsock::kMaxPacketsPerPump;
using vsock::poll_now;

std::optional<DescriptorChain> VirtioVsock::Core::next_rx_chain() {
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

bool VirtioVsock::Core::put_packet(const DescriptorChain& chain, const Header& h) {
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
void VirtioVsock::Core::fill_rx() {
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

// Reads the unix socket straight into rx buffers while credit and buffers last.
// Returns false if the connection was closed.
bool VirtioVsock::Core::pump_to_guest(Connection& c) {
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

bool VirtioVsock::Core::host_eof(Connection& c) {
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
}  // namespace kestrel
