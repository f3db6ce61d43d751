// VirtioVsock::Core: all mutable state of a VirtioVsock and the operations on it, shared
// between virtio_vsock.cpp (VirtioDevice glue), vsock_core.cpp (registration, connection
// lifetime, event dispatch), vsock_rx.cpp (rx buffers, host -> guest), vsock_tx.cpp (guest
// packets, guest -> host) and vsock_host.cpp (listener, CONNECT line, socket events).
// Internal to devices/virtio/vsock. Every method except on_event() and raise() runs with `mu`
// held; on_event() takes it, raise() runs after it is released.
#pragma once

#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>

#include "devices/virtio/queue/split_queue.hpp"
#include "devices/virtio/vsock/unix_socket.hpp"
#include "devices/virtio/vsock/virtio_vsock.hpp"
#include "devices/virtio/vsock/vsock_connection.hpp"

namespace kestrel {

namespace vsock {
inline constexpr size_t kMaxPacketsPerPump = 64;  // fairness between connections per callback
inline constexpr size_t kMaxAcceptsPerEvent = 16;
inline constexpr size_t kMaxIovecs = 1024;         // IOV_MAX

inline std::span<uint8_t> bytes_of(Header& h) {
    return std::span(reinterpret_cast<uint8_t*>(&h), sizeof h);
}
inline std::span<const uint8_t> bytes_of(const Header& h) {
    return std::span(reinterpret_cast<const uint8_t*>(&h), sizeof h);
}
// The socket's hang-up/error state re-read now: an epoll event can be stale when an fd
// number was closed and reused within one epoll_wait batch.
short poll_now(int fd);
}  // namespace vsock

struct VirtioVsock::Core : std::enable_shared_from_this<Core> {
    using Connection = vsock::Connection;
    using ConnKey = vsock::ConnKey;
    using Header = vsock::Header;
    using Op = vsock::Op;

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
    uint32_t next_host_port = VirtioVsock::kHostPortBase;

    // --- plumbing ----------------------------------------------------------------------------
    size_t total_connections() const { return conns.size() + pending_host.size(); }
    Header header_to_guest(uint32_t local_port, uint32_t peer_port, Op op) const;
    // Every packet to the guest carries this connection's buffer state (§5.10.6.3).
    Header header_for(Connection& c, Op op);
    void queue_broken(const char* which, const Error& e);
    void add_used_rx(uint16_t head, uint32_t len);
    Result<void> register_fd(int fd, uint32_t ev);
    void unregister_fd(int fd);
    void unregister_all();

    // --- connection lifetime -----------------------------------------------------------------
    void queue_rst(uint32_t local_port, uint32_t peer_port);
    void close_conn(Connection& c, bool send_rst);
    // An open connection ended abnormally: tell the guest (RST) and close the host side.
    void reset_conn(Connection& c);
    void enqueue_control(Connection& c);
    // Brings the epoll registration in line with what the connection can do now. Returns
    // false if the connection had to be closed.
    bool update_interest(Connection& c);
    void update_all_interests();
    void set_rx_starved(bool starved);

    // --- guest rx buffers --------------------------------------------------------------------
    std::optional<DescriptorChain> next_rx_chain();
    bool put_packet(const DescriptorChain& chain, const Header& h);
    // Sends queued RSTs and connection control packets while rx buffers last.
    void fill_rx();

    // --- host -> guest -----------------------------------------------------------------------
    // Reads the unix socket straight into rx buffers while credit and buffers last.
    // Returns false if the connection was closed.
    bool pump_to_guest(Connection& c);
    bool host_eof(Connection& c);

    // --- guest -> host -----------------------------------------------------------------------
    void account_to_host(Connection& c, size_t n);
    // Writes buffered bytes to the unix socket. Returns false if the connection was closed.
    bool flush_to_host(Connection& c);
    // After bytes reached the host: credit update, deferred shutdown/close.
    bool after_host_progress(Connection& c);
    // An RW payload: straight to the socket when nothing is queued before it, the rest
    // copied into the connection's buffer (bounded by the credit check done by the caller).
    bool deliver_to_host(Connection& c, const DescriptorChain& chain, uint32_t len);

    // --- guest tx packets --------------------------------------------------------------------
    void reply_rst(const Header& h);
    Connection* find(const ConnKey& k);
    void guest_connect(const Header& h);
    void guest_shutdown(Connection& c, uint32_t flags);
    void handle_packet(const DescriptorChain& chain);
    void process_tx();

    // --- host-side sockets -------------------------------------------------------------------
    void on_listener();
    void drop_pending(int fd);
    // Reads the CONNECT line a byte at a time, so nothing after '\n' is consumed here.
    void on_pending(int fd);
    void on_connection(Connection& c, uint32_t revents);

    // --- dispatch ----------------------------------------------------------------------------
    // An EventRegistry callback: routes the fd to the listener, a pending CONNECT line or a
    // connection, then raises the interrupts the work earned.
    void on_event(int fd, uint32_t revents);
    void collect_signals(VirtioInterrupt*& to_signal, bool& sig_rx, bool& sig_tx);
    static void raise(VirtioInterrupt* irq, bool sig_rx, bool sig_tx);
    void reset_locked();
};

}  // namespace kestrel
