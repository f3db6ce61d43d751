#include "migration/virtio_state.hpp"

#include <fmt/format.h>

#include "devices/pci/pci_config_space.hpp"

namespace kestrel::migration {

std::string virtio_section(uint32_t index) { return fmt::format("virtio/{}", index); }

void encode(Encoder& e, const VirtioPciDevice::State& s) {
    e.put_u16(s.device_type);
    e.put_bytes(s.config);
    e.put_u32(static_cast<uint32_t>(s.msix.vectors.size()));
    for (const auto& v : s.msix.vectors)
        for (uint32_t x : {v.address_lo, v.address_hi, v.data, v.control}) e.put_u32(x);
    e.put_u32(static_cast<uint32_t>(s.msix.pending.size()));
    for (uint64_t w : s.msix.pending) e.put_u64(w);
    e.put_u32(s.device_feature_select);
    e.put_u32(s.driver_feature_select);
    e.put_u64(s.driver_features);
    e.put_u16(s.config_msix_vector);
    e.put_u8(s.status);
    e.put_u8(s.config_generation);
    e.put_u8(s.isr);
    e.put_bool(s.activated);
    e.put_u16(s.queue_select);
    e.put_u32(static_cast<uint32_t>(s.queues.size()));
    for (const auto& q : s.queues) {
        e.put_u16(q.size);
        e.put_u16(q.msix_vector);
        e.put_bool(q.enabled);
        e.put_u64(q.desc);
        e.put_u64(q.driver);
        e.put_u64(q.device);
        e.put_bool(q.position.has_value());
        if (q.position) {
            e.put_u16(q.position->next_avail);
            e.put_u16(q.position->signalled_used);
            e.put_bool(q.position->signalled_used_valid);
        }
    }
}

Result<VirtioPciDevice::State> decode_virtio(const Section& sec) {
    Decoder d = TRY(Decoder::of(sec, kVirtioStateVersion));
    VirtioPciDevice::State s;
    s.device_type = TRY(d.u16("device_type"));
    auto config = TRY(d.bytes("config", PciConfigSpace::kSize));
    s.config.assign(config.begin(), config.end());
    const uint32_t vectors = TRY(d.u32_max("msix.vectors", msix::kMaxVectors));
    for (uint32_t i = 0; i < vectors; ++i) {
        MsixTable::VectorState v;
        v.address_lo = TRY(d.u32("msix.address_lo"));
        v.address_hi = TRY(d.u32("msix.address_hi"));
        v.data = TRY(d.u32("msix.data"));
        v.control = TRY(d.u32("msix.control"));
        s.msix.vectors.push_back(v);
    }
    const uint32_t words = TRY(d.u32_max("msix.pending", (msix::kMaxVectors + 63) / 64));
    for (uint32_t i = 0; i < words; ++i) s.msix.pending.push_back(TRY(d.u64("msix.pending")));
    s.device_feature_select = TRY(d.u32("device_feature_select"));
    s.driver_feature_select = TRY(d.u32("driver_feature_select"));
    s.driver_features = TRY(d.u64("driver_features"));
    s.config_msix_vector = TRY(d.u16("config_msix_vector"));
    s.status = TRY(d.u8("status"));
    s.config_generation = TRY(d.u8("config_generation"));
    s.isr = TRY(d.u8("isr"));
    s.activated = TRY(d.boolean("activated"));
    s.queue_select = TRY(d.u16("queue_select"));
    const uint32_t queues = TRY(d.u32_max("queues", virtio_pci::kMaxQueues));
    for (uint32_t i = 0; i < queues; ++i) {
        VirtioPciDevice::QueueState q;
        q.size = TRY(d.u16("queue.size"));
        q.msix_vector = TRY(d.u16("queue.msix_vector"));
        q.enabled = TRY(d.boolean("queue.enabled"));
        q.desc = TRY(d.u64("queue.desc"));
        q.driver = TRY(d.u64("queue.driver"));
        q.device = TRY(d.u64("queue.device"));
        if (TRY(d.boolean("queue.has_position"))) {
            QueuePosition p;
            p.next_avail = TRY(d.u16("queue.next_avail"));
            p.signalled_used = TRY(d.u16("queue.signalled_used"));
            p.signalled_used_valid = TRY(d.boolean("queue.signalled_used_valid"));
            q.position = p;
        }
        s.queues.push_back(q);
    }
    TRY(d.finish());
    return s;
}

}  // namespace kestrel::migration
