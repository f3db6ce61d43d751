#include "devices/virtio/blk/blk_request.hpp"

#include <algorithm>

#include "devices/virtio/blk/blk_spec.hpp"

namespace kestrel {

namespace {

using Kind = BlkRequest::Kind;

BlkRequest status(BlkRequest r, uint8_t st, BlkReject why) {
    r.kind = Kind::Status;
    r.status = st;
    r.reject = why;
    return r;
}

// Overflow-safe: sector + count <= capacity.
bool in_range(uint64_t sector, uint64_t count, uint64_t capacity) {
    return sector <= capacity && count <= capacity - sector;
}

BlkRequest data_request(BlkRequest r, Kind kind, uint64_t sector, uint64_t len,
                        const BlkLimits& lim) {
    if (len % blk::kSectorSize != 0 || len > lim.max_data_bytes)
        return status(r, blk::kStatusIoErr, BlkReject::BadLength);
    if (!in_range(sector, len / blk::kSectorSize, lim.capacity_sectors))
        return status(r, blk::kStatusIoErr, BlkReject::OutOfRange);
    if (len == 0) return status(r, blk::kStatusOk, BlkReject::None);
    r.kind = kind;
    r.offset = sector * blk::kSectorSize;
    r.len = len;
    return r;
}

// DISCARD / WRITE_ZEROES carry exactly max_*_seg = 1 segment (what we advertise).
BlkRequest range_request(BlkRequest r, const GuestMemory& mem, const DescriptorChain& chain,
                         const BlkLimits& lim) {
    bool discard = r.type == blk::kTypeDiscard;
    if (!(discard ? lim.discard : lim.write_zeroes))
        return status(r, blk::kStatusUnsupp, BlkReject::Unsupported);
    if (lim.read_only) return status(r, blk::kStatusIoErr, BlkReject::ReadOnly);
    uint64_t payload = chain.readable_bytes() - sizeof(blk::RequestHeader);
    if (payload == 0 || payload % sizeof(blk::DiscardWriteZeroesSegment) != 0)
        return status(r, blk::kStatusIoErr, BlkReject::BadSegment);
    if (payload / sizeof(blk::DiscardWriteZeroesSegment) > 1)
        return status(r, blk::kStatusUnsupp, BlkReject::BadSegment);
    blk::DiscardWriteZeroesSegment seg{};
    auto got = chain.read_to(mem, std::span(reinterpret_cast<uint8_t*>(&seg), sizeof seg),
                             sizeof(blk::RequestHeader));
    if (!got || *got != sizeof seg) return status(r, blk::kStatusIoErr, BlkReject::BadSegment);
    // virtio 1.2 §5.2.6.2: unknown flags, or unmap on a DISCARD, are UNSUPP.
    uint32_t allowed = discard ? 0 : blk::kSegmentFlagUnmap;
    if (seg.flags & ~allowed) return status(r, blk::kStatusUnsupp, BlkReject::BadSegment);
    uint32_t max = discard ? lim.max_discard_sectors : lim.max_write_zeroes_sectors;
    if (seg.num_sectors > max) return status(r, blk::kStatusIoErr, BlkReject::BadSegment);
    if (!in_range(seg.sector, seg.num_sectors, lim.capacity_sectors))
        return status(r, blk::kStatusIoErr, BlkReject::OutOfRange);
    if (seg.num_sectors == 0) return status(r, blk::kStatusOk, BlkReject::None);
    r.kind = discard ? Kind::Discard : Kind::WriteZeroes;
    r.offset = seg.sector * blk::kSectorSize;
    r.len = uint64_t{seg.num_sectors} * blk::kSectorSize;
    r.unmap = (seg.flags & blk::kSegmentFlagUnmap) != 0;
    return r;
}

}  // namespace

BlkRequest parse_blk_request(const GuestMemory& mem, const DescriptorChain& chain,
                             const BlkLimits& lim) {
    BlkRequest r;
    if (chain.writable_bytes() == 0) {
        r.reject = BlkReject::MissingStatus;
        return r;  // Kind::Drop
    }
    r.status_offset = chain.writable_bytes() - 1;
    if (chain.readable_bytes() < sizeof(blk::RequestHeader))
        return status(r, blk::kStatusIoErr, BlkReject::BadHeader);
    blk::RequestHeader hdr{};
    auto got = chain.read_to(mem, std::span(reinterpret_cast<uint8_t*>(&hdr), sizeof hdr), 0);
    if (!got || *got != sizeof hdr) return status(r, blk::kStatusIoErr, BlkReject::BadHeader);
    r.type = hdr.type;

    switch (hdr.type) {
    case blk::kTypeIn:
        return data_request(r, Kind::Read, hdr.sector, chain.writable_bytes() - 1, lim);
    case blk::kTypeOut:
        // virtio 1.2 §5.2.6.2: a write to a VIRTIO_BLK_F_RO device gets IOERR.
        if (lim.read_only) return status(r, blk::kStatusIoErr, BlkReject::ReadOnly);
        return data_request(r, Kind::Write, hdr.sector,
                            chain.readable_bytes() - sizeof(blk::RequestHeader), lim);
    case blk::kTypeFlush:
        r.kind = Kind::Flush;
        return r;
    case blk::kTypeGetId:
        if (chain.writable_bytes() - 1 == 0) return status(r, blk::kStatusIoErr, BlkReject::BadLength);
        r.kind = Kind::GetId;
        r.len = std::min<uint64_t>(blk::kIdBytes, chain.writable_bytes() - 1);
        return r;
    case blk::kTypeDiscard:
    case blk::kTypeWriteZeroes:
        return range_request(r, mem, chain, lim);
    default:
        return status(r, blk::kStatusUnsupp, BlkReject::Unsupported);
    }
}

}  // namespace kestrel
