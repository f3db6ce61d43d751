// libFuzzer target for the split virtqueue (devices/virtio/queue): the input becomes a
// descriptor table, an available ring and free-form guest memory (indirect tables,
// buffers); the target pops chains until none are left, copies into and out of each one,
// builds its iovecs and completes it. Any crash, sanitizer report or broken invariant
// (__builtin_trap) is a bug in the queue code.
//
// Input layout (all little-endian, short inputs are zero-padded):
//   [0]      queue size = 1 << (b & 7)         (1..128)
//   [1]      bit 0 EVENT_IDX, bit 1 INDIRECT_DESC, bits 2..7 write offset into chains
//   [2..3]   avail idx the driver publishes; [4..5] used_event; [6..7] avail flags
//   [8.. ]   copied to guest RAM from kDescTable on: descriptor table, then avail ring
//            entries (2 bytes each, queue size of them), then everything else lands in
//            the free area (indirect tables and buffers at guessable addresses).
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "devices/virtio/queue/split_queue.hpp"
#include "devices/virtio/queue/virtq_spec.hpp"

using namespace kestrel;

namespace {

// Two RAM regions with a hole between them, so "inside RAM" has more than one edge.
constexpr uint64_t kLowSize = 0x10000;
constexpr uint64_t kHighStart = 0x20000;
constexpr uint64_t kHighSize = 0x10000;
constexpr uint64_t kDescTable = 0x1000;   // 16 * 128 = 0x800 bytes max
constexpr uint64_t kAvailRing = 0x1800;   // ring entries written from the input
constexpr uint64_t kUsedRing = 0x2000;
constexpr uint64_t kFreeArea = 0x3000;    // rest of the input, up to the low region's end

GuestMemory& memory() {
    static GuestMemory mem = [] {
        GuestRegionSpec specs[] = {{GuestAddress(0), kLowSize},
                                   {GuestAddress(kHighStart), kHighSize}};
        auto m = GuestMemory::create(specs);
        if (!m) __builtin_trap();
        return std::move(*m);
    }();
    return mem;
}

void check(bool ok) {
    if (!ok) __builtin_trap();
}

void exercise_chain(GuestMemory& mem, const DescriptorChain& c, uint8_t write_offset) {
    uint64_t rd = 0, wr = 0;
    bool seen_writable = false;
    for (const Descriptor& d : c.descriptors()) {
        if (d.len) check(mem.slice(d.addr, d.len).has_value());
        if (d.device_writable) {
            seen_writable = true;
            wr += d.len;
        } else {
            check(!seen_writable);  // §2.7.4.2 ordering held
            rd += d.len;
        }
    }
    check(rd == c.readable_bytes() && wr == c.writable_bytes());

    static std::vector<uint8_t> buf(0x20000);
    auto got = c.read_to(mem, buf);
    check(got.has_value() && *got == std::min<uint64_t>(rd, buf.size()));
    auto put = c.write_from(mem, std::span(buf).first(std::min<size_t>(buf.size(), 300)),
                            write_offset);
    check(put.has_value() && *put <= 300);

    auto riov = c.readable_iovecs(mem, 0, rd);
    check(riov.has_value());
    uint64_t total = 0;
    for (auto& v : *riov) total += v.iov_len;
    check(total == rd);
    if (wr > 0) {
        auto wiov = c.writable_iovecs(mem, 1, wr - 1);
        check(wiov.has_value());
        total = 0;
        for (auto& v : *wiov) total += v.iov_len;
        check(total == wr - 1);
    }
    check(!c.writable_iovecs(mem, wr, 1).has_value());
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    GuestMemory& mem = memory();
    uint8_t hdr[8] = {};
    std::memcpy(hdr, data, std::min<size_t>(size, sizeof hdr));
    const uint16_t qsize = static_cast<uint16_t>(1u << (hdr[0] & 7));
    const bool event_idx = hdr[1] & 1, indirect = hdr[1] & 2;
    const uint8_t write_offset = hdr[1] >> 2;
    uint16_t avail_idx, used_event, avail_flags;
    std::memcpy(&avail_idx, hdr + 2, 2);
    std::memcpy(&used_event, hdr + 4, 2);
    std::memcpy(&avail_flags, hdr + 6, 2);

    check(mem.fill(GuestAddress(0), kLowSize, 0).has_value());
    check(mem.fill(GuestAddress(kHighStart), kHighSize, 0).has_value());
    const uint8_t* body = data + std::min<size_t>(size, sizeof hdr);
    size_t body_len = size - std::min<size_t>(size, sizeof hdr);

    // Descriptor table, then the avail ring entries, then the free area.
    size_t desc_bytes = std::min<size_t>(body_len, qsize * sizeof(virtq::Desc));
    check(mem.write(GuestAddress(kDescTable), std::span(body, desc_bytes)).has_value());
    body += desc_bytes;
    body_len -= desc_bytes;
    size_t ring_bytes = std::min<size_t>(body_len, 2u * qsize);
    check(mem.write(GuestAddress(kAvailRing + virtq::kAvailRingOffset), std::span(body, ring_bytes))
              .has_value());
    body += ring_bytes;
    body_len -= ring_bytes;
    size_t free_bytes = std::min<size_t>(body_len, kLowSize - kFreeArea);
    check(mem.write(GuestAddress(kFreeArea), std::span(body, free_bytes)).has_value());

    check(mem.write_obj(GuestAddress(kAvailRing + virtq::kAvailFlagsOffset), avail_flags).has_value());
    check(mem.write_obj(GuestAddress(kAvailRing + virtq::kAvailIdxOffset), avail_idx).has_value());
    check(mem.write_obj(GuestAddress(kAvailRing + virtq::avail_used_event_offset(qsize)), used_event)
              .has_value());

    uint64_t features = virtq::kFeatureVersion1 | (event_idx ? virtq::kFeatureEventIdx : 0) |
                        (indirect ? virtq::kFeatureIndirectDesc : 0);
    QueueConfig cfg{.size = qsize, .ready = true, .desc = GuestAddress(kDescTable),
                    .avail = GuestAddress(kAvailRing), .used = GuestAddress(kUsedRing)};
    auto q = SplitQueue::create(mem, cfg, 256, features);
    check(q.has_value());

    // At most qsize entries can be pending; one more pop must find the ring empty or broken.
    for (int i = 0; i <= qsize; ++i) {
        auto r = q->pop(mem);
        if (!r) break;  // broken queue: a device would now need a reset
        if (!r->has_value()) break;
        check(i < qsize);
        if (auto* bad = std::get_if<MalformedChain>(&**r)) {
            check(bad->head < qsize);
            check(q->add_used(mem, bad->head, 0).has_value());
        } else {
            auto& c = std::get<DescriptorChain>(**r);
            check(c.head() < qsize);
            check(c.descriptors().size() <= DescriptorChain::max_descriptors(qsize));
            exercise_chain(mem, c, write_offset);
            check(q->add_used(mem, c.head(), static_cast<uint32_t>(c.writable_bytes())).has_value());
        }
        check(q->in_flight() == 0);
        check(q->should_notify(mem).has_value());
    }
    // The state survives a round trip.
    auto restored = SplitQueue::restore(mem, q->state());
    check(restored.has_value() && restored->state() == q->state());
    return 0;
}
