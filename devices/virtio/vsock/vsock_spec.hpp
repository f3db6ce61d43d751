// virtio-vsock wire format (virtio 1.2 §5.10 "Socket Device"): device id, feature bits,
// configuration layout, the packet header and its op/type/flag values. All fields are
// little-endian in guest memory; kestrel only runs on little-endian x86-64 hosts.
#pragma once

#include <cstddef>
#include <cstdint>

namespace kestrel::vsock {

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "virtio-vsock fields are little-endian");

inline constexpr uint16_t kDeviceType = 19;  // virtio 1.2 §5.10.1

// virtio 1.2 §5.10.2: virtqueue numbers.
inline constexpr uint16_t kRxQueue = 0;     // device -> driver packets
inline constexpr uint16_t kTxQueue = 1;     // driver -> device packets
inline constexpr uint16_t kEventQueue = 2;  // device events (transport reset)
inline constexpr uint16_t kNumQueues = 3;

// virtio 1.2 §5.10.3 feature bits.
inline constexpr uint64_t kFeatureStream = 1ull << 0;     // VIRTIO_VSOCK_F_STREAM
inline constexpr uint64_t kFeatureSeqpacket = 1ull << 1;  // VIRTIO_VSOCK_F_SEQPACKET (not offered)

// virtio 1.2 §5.10.4 struct virtio_vsock_config.
struct Config {
    uint64_t guest_cid;  // 0x0; only the low 32 bits are used
};
static_assert(sizeof(Config) == 8);

// virtio 1.2 §5.10.4 / §5.10.6.2: reserved context identifiers.
inline constexpr uint64_t kHostCid = 2;            // VMADDR_CID_HOST
inline constexpr uint64_t kMinGuestCid = 3;        // 0, 1 and 2 are reserved
inline constexpr uint64_t kMaxGuestCid = 0xfffffffe;  // 0xffffffff is VMADDR_CID_ANY

// virtio 1.2 §5.10.6 struct virtio_vsock_hdr (packed: 44 bytes, no tail padding).
struct [[gnu::packed]] Header {
    uint64_t src_cid;    // 0x00
    uint64_t dst_cid;    // 0x08
    uint32_t src_port;   // 0x10
    uint32_t dst_port;   // 0x14
    uint32_t len;        // 0x18 payload bytes following the header
    uint16_t type;       // 0x1c
    uint16_t op;         // 0x1e
    uint32_t flags;      // 0x20
    uint32_t buf_alloc;  // 0x24 sender's receive buffer size (§5.10.6.3 buffer space)
    uint32_t fwd_cnt;    // 0x28 bytes the sender has consumed from that buffer
};
static_assert(sizeof(Header) == 44);
static_assert(offsetof(Header, len) == 0x18);
static_assert(offsetof(Header, op) == 0x1e);
static_assert(offsetof(Header, fwd_cnt) == 0x28);
inline constexpr uint32_t kHeaderBytes = sizeof(Header);

// virtio 1.2 §5.10.6 socket types.
inline constexpr uint16_t kTypeStream = 1;
inline constexpr uint16_t kTypeSeqpacket = 2;

// virtio 1.2 §5.10.6 operations.
enum class Op : uint16_t {
    Invalid = 0,
    Request = 1,
    Response = 2,
    Rst = 3,
    Shutdown = 4,
    Rw = 5,
    CreditUpdate = 6,
    CreditRequest = 7,
};

// virtio 1.2 §5.10.6.5 (stream sockets): flags of VIRTIO_VSOCK_OP_SHUTDOWN.
inline constexpr uint32_t kShutdownReceive = 1;  // sender will receive no more data
inline constexpr uint32_t kShutdownSend = 2;     // sender will send no more data
inline constexpr uint32_t kShutdownBoth = kShutdownReceive | kShutdownSend;

// virtio 1.2 §5.10.6.7 struct virtio_vsock_event (sent after a restore; see VirtioVsock).
struct Event {
    uint32_t id;  // 0x0; 0 = VIRTIO_VSOCK_EVENT_TRANSPORT_RESET
};
static_assert(sizeof(Event) == 4);

}  // namespace kestrel::vsock
