// virtio-net wire formats and feature bits (virtio 1.2 §5.1). Little-endian in guest memory;
// kestrel runs on x86-64 hosts only, so the structs are copied as they are.
#pragma once

#include <cstddef>
#include <cstdint>

namespace kestrel::net {

inline constexpr uint16_t kDeviceType = 1;  // virtio 1.2 §5 device ID table
inline constexpr uint16_t kRxQueue = 0;     // §5.1.2: receiveq1
inline constexpr uint16_t kTxQueue = 1;     // §5.1.2: transmitq1
inline constexpr uint16_t kCtrlQueue = 2;   // §5.1.2: controlq (no VIRTIO_NET_F_MQ: after one pair)

// virtio 1.2 §5.1.3 feature bits.
inline constexpr uint64_t kFeatureCsum = 1ull << 0;        // VIRTIO_NET_F_CSUM: driver sends partial csums
inline constexpr uint64_t kFeatureGuestCsum = 1ull << 1;   // VIRTIO_NET_F_GUEST_CSUM
inline constexpr uint64_t kFeatureMtu = 1ull << 3;
inline constexpr uint64_t kFeatureMac = 1ull << 5;
inline constexpr uint64_t kFeatureGuestTso4 = 1ull << 7;
inline constexpr uint64_t kFeatureGuestTso6 = 1ull << 8;
inline constexpr uint64_t kFeatureGuestEcn = 1ull << 9;
inline constexpr uint64_t kFeatureGuestUfo = 1ull << 10;
inline constexpr uint64_t kFeatureHostTso4 = 1ull << 11;
inline constexpr uint64_t kFeatureHostTso6 = 1ull << 12;
inline constexpr uint64_t kFeatureHostEcn = 1ull << 13;
inline constexpr uint64_t kFeatureHostUfo = 1ull << 14;
inline constexpr uint64_t kFeatureMrgRxbuf = 1ull << 15;
inline constexpr uint64_t kFeatureStatus = 1ull << 16;
inline constexpr uint64_t kFeatureCtrlVq = 1ull << 17;
inline constexpr uint64_t kFeatureGuestAnnounce = 1ull << 21;
inline constexpr uint64_t kFeatureMq = 1ull << 22;

// §5.1.4 status field.
inline constexpr uint16_t kStatusLinkUp = 1;
inline constexpr uint16_t kStatusAnnounce = 2;  // VIRTIO_NET_S_ANNOUNCE (§5.1.6.5.3)

// §5.1.6.5 control virtqueue: struct virtio_net_ctrl { u8 class; u8 command;
// u8 command-specific-data[]; u8 ack; } — class and command readable, ack the one
// device-writable byte at the end.
inline constexpr uint8_t kCtrlOk = 0;   // VIRTIO_NET_OK
inline constexpr uint8_t kCtrlErr = 1;  // VIRTIO_NET_ERR
// §5.1.6.5.3 gratuitous packet sending.
inline constexpr uint8_t kCtrlClassAnnounce = 3;  // VIRTIO_NET_CTRL_ANNOUNCE
inline constexpr uint8_t kCtrlAnnounceAck = 0;    // VIRTIO_NET_CTRL_ANNOUNCE_ACK

// virtio 1.2 §5.1.4 struct virtio_net_config. Fields after `status` exist only with
// features we do not offer (MQ/RSS, MTU, SPEED_DUPLEX, hash); they read as zero.
struct Config {
    uint8_t mac[6];                              // 0x00
    uint16_t status;                             // 0x06
    uint16_t max_virtqueue_pairs;                // 0x08
    uint16_t mtu;                                // 0x0a
    uint32_t speed;                              // 0x0c
    uint8_t duplex;                              // 0x10
    uint8_t rss_max_key_size;                    // 0x11
    uint16_t rss_max_indirection_table_length;   // 0x12
    uint32_t supported_hash_types;               // 0x14
};
static_assert(sizeof(Config) == 24);
static_assert(offsetof(Config, status) == 6);
static_assert(offsetof(Config, supported_hash_types) == 0x14);

// virtio 1.2 §5.1.6 struct virtio_net_hdr. With VIRTIO_F_VERSION_1 the header always
// includes num_buffers (12 bytes), merged RX buffers negotiated or not.
inline constexpr uint8_t kHdrFNeedsCsum = 1;
inline constexpr uint8_t kHdrFDataValid = 2;
inline constexpr uint8_t kHdrFRscInfo = 4;
inline constexpr uint8_t kGsoNone = 0;
inline constexpr uint8_t kGsoTcpV4 = 1;
inline constexpr uint8_t kGsoUdp = 3;
inline constexpr uint8_t kGsoTcpV6 = 4;
inline constexpr uint8_t kGsoUdpL4 = 5;
inline constexpr uint8_t kGsoEcn = 0x80;

struct NetHdr {
    uint8_t flags;          // 0x0
    uint8_t gso_type;       // 0x1
    uint16_t hdr_len;       // 0x2
    uint16_t gso_size;      // 0x4
    uint16_t csum_start;    // 0x6
    uint16_t csum_offset;   // 0x8
    uint16_t num_buffers;   // 0xa
};
static_assert(sizeof(NetHdr) == 12);
static_assert(offsetof(NetHdr, num_buffers) == 10);
inline constexpr uint32_t kHdrBytes = sizeof(NetHdr);

// Largest frame either direction carries: a 64 KiB GSO super-frame (IP total length is
// 16 bits) plus Ethernet and VLAN headers, rounded the way Linux sizes its big RX buffers
// (virtio_net's 65550-byte max packet). Frames past it are dropped, never truncated.
inline constexpr uint32_t kMaxFrameBytes = 65550;
inline constexpr uint32_t kMaxPacketBytes = kHdrBytes + kMaxFrameBytes;  // 65562
// §5.1.6: smallest meaningful frame is an Ethernet header.
inline constexpr uint32_t kEthHeaderBytes = 14;

}  // namespace kestrel::net
