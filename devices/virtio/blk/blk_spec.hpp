// virtio-blk wire format (virtio 1.2 §5.2): feature bits, configuration layout, request
// header, discard/write-zeroes segment, request types and status values. Own definitions
// instead of <linux/virtio_blk.h>: that header's virtio_blk_outhdr/config use __virtio
// types and (in newer versions) flexible-array members that are not valid C++, and we want
// offset comments and size checks. Little-endian, read as-is (x86-64 host only).
#pragma once

#include <cstddef>
#include <cstdint>

namespace kestrel::blk {

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "virtio 1.x is little-endian");

inline constexpr uint16_t kDeviceType = 2;  // virtio 1.2 §5 device ID table

// virtio 1.2 §5.2.3 feature bits.
inline constexpr uint64_t kFeatureSizeMax = 1ull << 1;
inline constexpr uint64_t kFeatureSegMax = 1ull << 2;
inline constexpr uint64_t kFeatureGeometry = 1ull << 4;
inline constexpr uint64_t kFeatureRo = 1ull << 5;
inline constexpr uint64_t kFeatureBlkSize = 1ull << 6;
inline constexpr uint64_t kFeatureFlush = 1ull << 9;
inline constexpr uint64_t kFeatureTopology = 1ull << 10;
inline constexpr uint64_t kFeatureConfigWce = 1ull << 11;
inline constexpr uint64_t kFeatureMq = 1ull << 12;
inline constexpr uint64_t kFeatureDiscard = 1ull << 13;
inline constexpr uint64_t kFeatureWriteZeroes = 1ull << 14;

// virtio 1.2 §5.2.4 struct virtio_blk_config, up to the secure-erase fields (kept so the
// struct is its natural 8-byte-aligned size; SECURE_ERASE is not offered, they stay 0). The
// zoned fields after them (VIRTIO_BLK_F_ZONED, not offered) read as 0.
struct Geometry {
    uint16_t cylinders;  // 0x0
    uint8_t heads;       // 0x2
    uint8_t sectors;     // 0x3
};
static_assert(sizeof(Geometry) == 4);

struct Config {
    uint64_t capacity;                  // 0x00 in 512-byte sectors
    uint32_t size_max;                  // 0x08 VIRTIO_BLK_F_SIZE_MAX
    uint32_t seg_max;                   // 0x0c VIRTIO_BLK_F_SEG_MAX
    Geometry geometry;                  // 0x10 VIRTIO_BLK_F_GEOMETRY
    uint32_t blk_size;                  // 0x14 VIRTIO_BLK_F_BLK_SIZE
    uint8_t physical_block_exp;         // 0x18 VIRTIO_BLK_F_TOPOLOGY
    uint8_t alignment_offset;           // 0x19
    uint16_t min_io_size;               // 0x1a
    uint32_t opt_io_size;               // 0x1c
    uint8_t writeback;                  // 0x20 VIRTIO_BLK_F_CONFIG_WCE
    uint8_t unused0;                    // 0x21
    uint16_t num_queues;                // 0x22 VIRTIO_BLK_F_MQ
    uint32_t max_discard_sectors;       // 0x24 VIRTIO_BLK_F_DISCARD
    uint32_t max_discard_seg;           // 0x28
    uint32_t discard_sector_alignment;  // 0x2c
    uint32_t max_write_zeroes_sectors;  // 0x30 VIRTIO_BLK_F_WRITE_ZEROES
    uint32_t max_write_zeroes_seg;      // 0x34
    uint8_t write_zeroes_may_unmap;     // 0x38
    uint8_t unused1[3];                 // 0x39
    uint32_t max_secure_erase_sectors;  // 0x3c VIRTIO_BLK_F_SECURE_ERASE
    uint32_t max_secure_erase_seg;      // 0x40
    uint32_t secure_erase_sector_alignment;  // 0x44
};
static_assert(sizeof(Config) == 0x48);
static_assert(offsetof(Config, num_queues) == 0x22);
static_assert(offsetof(Config, max_discard_sectors) == 0x24);
static_assert(offsetof(Config, write_zeroes_may_unmap) == 0x38);

// virtio 1.2 §5.2.6 struct virtio_blk_req: this header in the device-readable part, then
// data, then one status byte as the last device-writable byte.
struct RequestHeader {
    uint32_t type;      // 0x0 kType*
    uint32_t reserved;  // 0x4
    uint64_t sector;    // 0x8 offset in 512-byte sectors (IN/OUT)
};
static_assert(sizeof(RequestHeader) == 16);

// virtio 1.2 §5.2.6 struct virtio_blk_discard_write_zeroes: the data of DISCARD and
// WRITE_ZEROES requests, one per range.
struct DiscardWriteZeroesSegment {
    uint64_t sector;       // 0x0
    uint32_t num_sectors;  // 0x8
    uint32_t flags;        // 0xc bit 0: unmap, other bits reserved
};
static_assert(sizeof(DiscardWriteZeroesSegment) == 16);
inline constexpr uint32_t kSegmentFlagUnmap = 1;

// virtio 1.2 §5.2.6 request types.
inline constexpr uint32_t kTypeIn = 0;
inline constexpr uint32_t kTypeOut = 1;
inline constexpr uint32_t kTypeFlush = 4;
inline constexpr uint32_t kTypeGetId = 8;
inline constexpr uint32_t kTypeGetLifetime = 10;
inline constexpr uint32_t kTypeDiscard = 11;
inline constexpr uint32_t kTypeWriteZeroes = 13;
inline constexpr uint32_t kTypeSecureErase = 14;

// virtio 1.2 §5.2.6 status values.
inline constexpr uint8_t kStatusOk = 0;
inline constexpr uint8_t kStatusIoErr = 1;
inline constexpr uint8_t kStatusUnsupp = 2;

inline constexpr uint64_t kSectorSize = 512;
// virtio 1.2 §5.2.6: GET_ID writes a 20-byte serial, NUL-padded if shorter.
inline constexpr size_t kIdBytes = 20;

}  // namespace kestrel::blk
