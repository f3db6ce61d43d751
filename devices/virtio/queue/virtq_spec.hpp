// Split-virtqueue wire layout (virtio 1.2 §2.7) and the feature bits the queue code depends
// on (virtio 1.2 §6 "Reserved Feature Bits"). Everything is little-endian in guest memory;
// kestrel only runs on x86-64 hosts, so the structs are read and written as they are.
#pragma once

#include <cstddef>
#include <cstdint>

namespace kestrel::virtq {

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "virtio 1.x rings are little-endian");

// virtio 1.2 §6: feature bits shared by every device type.
inline constexpr uint64_t kFeatureIndirectDesc = 1ull << 28;  // VIRTIO_F_INDIRECT_DESC
inline constexpr uint64_t kFeatureEventIdx = 1ull << 29;      // VIRTIO_F_EVENT_IDX
inline constexpr uint64_t kFeatureVersion1 = 1ull << 32;      // VIRTIO_F_VERSION_1

// virtio 1.2 §2.7: "The maximum Queue Size value is 32768."
inline constexpr uint16_t kMaxQueueSize = 32768;

// virtio 1.2 §2.7 table: minimum alignment of each part.
inline constexpr uint64_t kDescAlign = 16;
inline constexpr uint64_t kAvailAlign = 2;
inline constexpr uint64_t kUsedAlign = 4;

// virtio 1.2 §2.7.5 struct virtq_desc.
inline constexpr uint16_t kDescFNext = 1;
inline constexpr uint16_t kDescFWrite = 2;
inline constexpr uint16_t kDescFIndirect = 4;

struct Desc {
    uint64_t addr;   // 0x0 guest-physical
    uint32_t len;    // 0x8
    uint16_t flags;  // 0xc
    uint16_t next;   // 0xe valid when flags & kDescFNext
};
static_assert(sizeof(Desc) == 16);
static_assert(offsetof(Desc, flags) == 12);

// virtio 1.2 §2.7.6 struct virtq_avail: flags (0x0), idx (0x2), ring[size] (0x4),
// used_event (0x4 + 2*size, only with VIRTIO_F_EVENT_IDX).
inline constexpr uint16_t kAvailFNoInterrupt = 1;
inline constexpr uint64_t kAvailFlagsOffset = 0;
inline constexpr uint64_t kAvailIdxOffset = 2;
inline constexpr uint64_t kAvailRingOffset = 4;
constexpr uint64_t avail_used_event_offset(uint16_t size) { return 4 + 2 * uint64_t{size}; }
constexpr uint64_t avail_bytes(uint16_t size, bool event_idx) {
    return 4 + 2 * uint64_t{size} + (event_idx ? 2 : 0);
}

// virtio 1.2 §2.7.8 struct virtq_used: flags (0x0), idx (0x2), ring[size] of UsedElem (0x4),
// avail_event (0x4 + 8*size, only with VIRTIO_F_EVENT_IDX).
inline constexpr uint16_t kUsedFNoNotify = 1;
inline constexpr uint64_t kUsedFlagsOffset = 0;
inline constexpr uint64_t kUsedIdxOffset = 2;
inline constexpr uint64_t kUsedRingOffset = 4;
struct UsedElem {
    uint32_t id;   // 0x0 head of the chain
    uint32_t len;  // 0x4 bytes written into the device-writable part
};
static_assert(sizeof(UsedElem) == 8);
constexpr uint64_t used_avail_event_offset(uint16_t size) { return 4 + 8 * uint64_t{size}; }
constexpr uint64_t used_bytes(uint16_t size, bool event_idx) {
    return 4 + 8 * uint64_t{size} + (event_idx ? 2 : 0);
}

// virtio 1.2 §2.7.7 (vring_need_event): true when the used index moving from old_idx to
// new_idx passed event_idx, i.e. event_idx lies in [old_idx, new_idx) modulo 2^16.
constexpr bool need_event(uint16_t event_idx, uint16_t new_idx, uint16_t old_idx) {
    return static_cast<uint16_t>(new_idx - event_idx - 1) < static_cast<uint16_t>(new_idx - old_idx);
}

}  // namespace kestrel::virtq
