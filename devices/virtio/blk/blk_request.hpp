// Parsing and validation of one virtio-blk request chain (virtio 1.2 §5.2.6) into what the
// device must do: an I/O, or an immediate status. Pure: reads the chain's header and
// segment from guest memory once, checks them against the disk's limits, never does I/O.
//
// Framing (§2.6.4): no assumption about how the driver split the request into descriptors.
// The header is the first 16 readable bytes, OUT/DISCARD/WRITE_ZEROES data the rest of the
// readable part; IN/GET_ID data is the writable part minus its last byte, the status.
#pragma once

#include <cstdint>

#include "devices/virtio/queue/descriptor_chain.hpp"
#include "vmm/memory/guest_memory.hpp"

namespace kestrel {

struct BlkLimits {
    uint64_t capacity_sectors = 0;
    bool read_only = false;
    bool discard = false;        // VIRTIO_BLK_F_DISCARD negotiated
    bool write_zeroes = false;   // VIRTIO_BLK_F_WRITE_ZEROES negotiated
    uint32_t max_discard_sectors = 0;
    uint32_t max_write_zeroes_sectors = 0;
    uint64_t max_data_bytes = 0;  // one IN/OUT request
};

// Why a request was refused; selects the BlkMetrics counter.
enum class BlkReject : uint8_t {
    None, BadHeader, MissingStatus, BadLength, OutOfRange, ReadOnly, Unsupported, BadSegment
};

struct BlkRequest {
    enum class Kind : uint8_t {
        Read, Write, Flush, GetId, Discard, WriteZeroes,
        Status,  // no I/O: answer with `status` now
        Drop,    // no status byte to write: return the chain with used len 0
    };
    Kind kind = Kind::Drop;
    uint32_t type = 0;           // raw header type (for per-type counters)
    uint64_t offset = 0;         // bytes into the disk (Read/Write/Discard/WriteZeroes)
    uint64_t len = 0;            // bytes of data or range; GetId: bytes of ID to write
    bool unmap = false;          // WriteZeroes may deallocate
    uint8_t status = 0;          // Kind::Status
    uint64_t status_offset = 0;  // index of the status byte within the writable part
    BlkReject reject = BlkReject::None;
};

BlkRequest parse_blk_request(const GuestMemory& mem, const DescriptorChain& chain,
                             const BlkLimits& limits);

}  // namespace kestrel
