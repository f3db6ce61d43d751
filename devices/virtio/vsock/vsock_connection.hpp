// One vsock stream connection between a guest port and a host unix socket: its state, the
// credit accounting of virtio 1.2 §5.10.6.3 in both directions, and the bytes the guest
// sent that the unix socket has not taken yet. Plain data plus arithmetic; VirtioVsock
// drives it. Also the text lines of the host-side protocol (Firecracker's: a host program
// sends "CONNECT <port>\n" and gets "OK <host port>\n").
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "vmm/base/fd.hpp"

namespace kestrel::vsock {

// "CONNECT <port>" (the '\n' already stripped; a trailing '\r' is tolerated): the decimal
// guest port, or nullopt for anything else.
std::optional<uint32_t> parse_connect_line(std::string_view line);
// What the host program reads once the guest accepted: "OK <host_port>\n".
std::string ok_line(uint32_t host_port);

// Identity of a connection on the device: (host-side port, guest-side port). The CIDs are
// fixed (host 2, the configured guest CID).
struct ConnKey {
    uint32_t local_port;
    uint32_t peer_port;
    auto operator<=>(const ConnKey&) const = default;
};

enum class ConnState {
    Connecting,   // host-initiated: REQUEST sent, waiting for the guest's RESPONSE or RST
    Established,  // bytes flow both ways
    Closing,      // guest shut down both directions: flush to the host, then RST and close
};

// Pending control packets for the guest, sent when rx buffers are available.
struct PendingControl {
    bool request = false;
    bool response = false;
    bool credit_update = false;
    uint32_t shutdown_flags = 0;  // non-zero: send OP_SHUTDOWN with these flags
    bool any() const { return request || response || credit_update || shutdown_flags != 0; }
};

struct Connection {
    ConnKey key{};
    UniqueFd fd;
    ConnState state = ConnState::Connecting;
    bool host_initiated = false;

    // Guest as receiver (host -> guest data), §5.10.6.3: what the guest told us.
    uint32_t peer_buf_alloc = 0;
    uint32_t peer_fwd_cnt = 0;
    uint32_t tx_cnt = 0;  // payload bytes we sent the guest (free-running)

    // Host as receiver (guest -> host data).
    uint32_t buf_alloc = 0;          // what we advertise
    uint32_t rx_cnt = 0;             // payload bytes received from the guest (free-running)
    uint32_t fwd_cnt = 0;            // of those, written into the unix socket
    uint32_t last_sent_fwd_cnt = 0;  // fwd_cnt in the last packet the guest got from us

    // Guest bytes the unix socket did not take yet (at most buf_alloc, by credit).
    std::vector<uint8_t> to_host;
    size_t to_host_head = 0;
    // Leading bytes of to_host that are our own protocol text ("OK <port>\n"), not guest
    // data: they do not count towards fwd_cnt.
    size_t unaccounted_to_host = 0;

    PendingControl control;
    bool in_control_queue = false;

    bool host_eof = false;           // read() returned 0: the host sends no more
    bool host_hung_up = false;       // host closed both ways: nothing can be written to it
    bool guest_shut_send = false;    // guest will send no more (SHUTDOWN F_SEND)
    bool guest_shut_receive = false; // guest will receive no more (SHUTDOWN F_RECEIVE)
    bool host_write_shut = false;    // we did shutdown(SHUT_WR) on the unix socket

    uint32_t registered_events = 0;  // epoll interest on the EventRegistry
    bool registered = false;

    // §5.10.6.3: bytes we may still send: peer_buf_alloc - (tx_cnt - peer_fwd_cnt), with
    // free-running u32 counters. A peer reporting a fwd_cnt ahead of what we sent, or a
    // buf_alloc below what is in flight, gets no credit rather than a wrapped huge one.
    uint32_t peer_free() const {
        uint32_t in_flight = tx_cnt - peer_fwd_cnt;
        return in_flight > peer_buf_alloc ? 0 : peer_buf_alloc - in_flight;
    }
    // Bytes the guest may still send as far as it knows (from the fwd_cnt we last told it).
    uint32_t guest_view_of_free() const {
        uint32_t in_flight = rx_cnt - last_sent_fwd_cnt;
        return in_flight > buf_alloc ? 0 : buf_alloc - in_flight;
    }
    // Bytes waiting for the unix socket (guest data: rx_cnt - fwd_cnt, plus protocol text).
    size_t buffered_to_host() const { return to_host.size() - to_host_head; }
    // Whether an RW payload of `len` bytes stays within the credit we granted.
    bool fits_our_credit(uint32_t len) const {
        return uint64_t{rx_cnt - fwd_cnt} + len <= buf_alloc;
    }
    void consume_to_host(size_t n);
    void append_to_host(const uint8_t* data, size_t n);
};

}  // namespace kestrel::vsock
