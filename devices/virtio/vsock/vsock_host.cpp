#include "devices/virtio/vsock/vsock_core.hpp"

#include <poll.h>
#include <sys/epoll.h>
#include <unistd.h>

#include <cerrno>

#include "vmm/base/log.hpp"

namespace kestrel {

using vsock::Connection;
using vsock::ConnKey;
using vsock::ConnState;
using vsock::Header;
using vsock::Op;
using M = VsockMetrics;
using vsock::kMaxAcceptsPerEvent;
using vsock::poll_now;

void VirtioVsock::Core::on_listener() {
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

void VirtioVsock::Core::drop_pending(int fd) {
    unregister_fd(fd);
    pending_host.erase(fd);
    M::inc(metrics.connections_refused);
}

// Reads the CONNECT line a byte at a time, so nothing after '\n' is consumed here.
void VirtioVsock::Core::on_pending(int fd) {
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

void VirtioVsock::Core::on_connection(Connection& c, uint32_t revents) {
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
}  // namespace kestrel
