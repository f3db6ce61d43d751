// libFuzzer target for the state stream (migration/state_stream.*): StateFile::parse on any
// bytes, then a Decoder over every section it accepts. Besides the sanitizers it checks:
//  - every refusal is a BadRequest whose message starts "state: ";
//  - the encoding is canonical: StateWriter, given the parsed header and sections, writes
//    back exactly the bytes parsed;
//  - find() finds every section; a refused Decoder read consumes nothing; a returned
//    u32_max/string/bytes respects its bound; Decoder::finish() passes iff nothing is left.
//
// Input: u8 mode, then the state file.
//   mode bit 0: recompute the CRC-64 trailer of the file before parsing. Without it nearly
//               every mutation dies at the checksum; with it the fuzzer reaches the header,
//               section and bound checks behind it.
// A section whose id and version are a component's (vcpu/N, kvm-clock, uart/com1, rtc,
// i8042, acpi-pm, ioapic, kvm-irqchip, memory, memory-diff, virtio/N) also goes through that component's decoder, which must refuse it
// with a "state: " message or return a state that encodes back to exactly the payload.
// A virtio/N payload is also XORed (cycled) onto the state of a virtio-rng function a driver
// brought up (MSI-X, one queue, activated): that state, decoded, goes into a fresh function's
// VirtioPciDevice::restore, which must refuse it or leave a function that saves back the
// same state (ISR and pending bits aside: a restore raises every enabled queue's vector).
// Each section's payload also drives its own Decoder: u8 op, then the field that op names
// (op % 9: u8, u16, u32, u64, i64, bool, u32_max with max (op >> 4) * 17, bytes of length
// op >> 4, string with max 64), until a read is refused or the payload is used up.
#include <cstdint>
#include <cstring>
#include <string_view>
#include <vector>

#include "migration/crc64.hpp"
#include "migration/legacy_state.hpp"
#include "migration/memory_state.hpp"
#include "devices/virtio/rng/virtio_rng.hpp"
#include "migration/vcpu_state.hpp"
#include "migration/virtio_state.hpp"
#include "migration/state_stream.hpp"
#include "tests/fuzz/fuzz_support.hpp"

using namespace kestrel;
using namespace kestrel::fuzz;
using namespace kestrel::migration;

namespace {

void check_refusal(const Error& e) {
    check(e.kind == ErrorKind::BadRequest);
    check(std::string_view(e.message).starts_with("state: "));
}

template <class T>
bool read_ok(Decoder& d, const Result<T>& r, size_t before) {
    if (r) return true;
    check_refusal(r.error());
    check(d.remaining() == before);
    return false;
}

// The component decoders: refused cleanly, or canonical.
template <class State>
void round_trip(const Section& s, const Result<State>& r) {
    if (!r) {
        check_refusal(r.error());
        return;
    }
    StateWriter w("fuzz", "fuzz");
    encode(w.section(s.id, s.version), *r);
    auto bytes = std::move(w).finish();
    check(bytes.has_value());
    auto f = StateFile::parse(*bytes);
    check(f.has_value() && f->sections.size() == 1 && f->sections[0].payload == s.payload);
}

// The memory sections have no State struct of their own: decoded, encoded back, compared.
template <class Encode, class T>
void round_trip_with(const Section& s, const Result<T>& r, Encode encode) {
    if (!r) {
        check_refusal(r.error());
        return;
    }
    Encoder e;
    encode(e, *r);
    check(e.bytes() == s.payload);
}

struct NullSink final : MsiSink {
    void configure(uint16_t, uint64_t, uint32_t) override {}
    void fire(uint16_t) override {}
};

Result<void> fixed_entropy(std::span<uint8_t> out) {
    std::fill(out.begin(), out.end(), uint8_t{0x5a});
    return {};
}

// A virtio-rng function on the fuzz memory, with its own registry; nothing is shared between
// inputs but the memory, which is cleared.
struct RngFunction {
    FakeRegistry events;
    std::shared_ptr<VirtioPciDevice> pci = std::make_shared<VirtioPciDevice>(
        std::make_shared<VirtioRng>(fixed_entropy), memory(), events, std::make_shared<NullSink>());

    void common(uint64_t offset, uint64_t value, size_t width) {
        pci->bar_write(virtio_pci::kBar, virtio_pci::kCommonOffset + offset,
                       std::span(reinterpret_cast<const uint8_t*>(&value), width));
    }
    // What Linux's driver leaves: features, MSI-X enabled with both vectors, queue 0 at
    // 0x1000/0x2000/0x3000 (size 64, vector 1), DRIVER_OK.
    void bring_up() {
        common(0x14, 1, 1);
        common(0x14, 3, 1);
        common(0x08, 1, 4);
        common(0x0c, 1, 4);  // VERSION_1
        common(0x14, 11, 1);
        for (uint16_t at = 0x40; at < 0x100; at += 4) {  // the MSI-X capability: enable
            uint8_t id = 0;
            pci->config_read(at, std::span(&id, 1));
            if (id != msix::kCapabilityId) continue;
            const uint16_t control = msix::kControlEnable;
            pci->config_write(static_cast<uint16_t>(at + 2), std::span(reinterpret_cast<const uint8_t*>(&control), 2));
        }
        for (uint16_t v = 0; v < 2; ++v) {
            const uint32_t entry[4] = {0xfee0'0000u + v * 0x1000u, 0, 0x40u + v, 0};
            pci->bar_write(virtio_pci::kBar, virtio_pci::kMsixTableOffset + v * 16,
                           std::span(reinterpret_cast<const uint8_t*>(entry), 16));
        }
        common(0x10, 0, 2);
        common(0x16, 0, 2);
        common(0x18, 64, 2);
        common(0x20, 0x1000, 8);
        common(0x28, 0x2000, 8);
        common(0x30, 0x3000, 8);
        common(0x1a, 1, 2);
        common(0x1c, 1, 2);
        common(0x14, 15, 1);
    }
};

const std::vector<uint8_t>& brought_up_state() {
    static const std::vector<uint8_t> bytes = [] {
        clear_memory(memory());
        RngFunction f;
        f.bring_up();
        auto st = f.pci->save();
        check(st.has_value() && st->activated);
        Encoder e;
        encode(e, *st);
        return e.bytes();
    }();
    return bytes;
}

void restore_virtio(const Section& s) {
    std::vector<uint8_t> payload = brought_up_state();
    if (!s.payload.empty())
        for (size_t i = 0; i < payload.size(); ++i) payload[i] ^= s.payload[i % s.payload.size()];
    auto st = decode_virtio(Section{s.id, kVirtioStateVersion, payload});
    if (!st) {  // a bool that is no longer 0/1, a count past its bound, a length that moved
        check_refusal(st.error());
        return;
    }
    clear_memory(memory());
    RngFunction f;
    auto r = f.pci->restore(*st);
    if (!r) return;
    auto again = f.pci->save();
    check(again.has_value());
    again->isr = st->isr;
    again->msix.pending = st->msix.pending;
    check(*again == *st);
    f.pci->device().queue_notify(0);  // the restored queue serves whatever the rings hold
}

void decode_component(const StateFile& f, const Section& s) {
    if (s.id == kMemorySection) {
        round_trip_with(s, decode_memory(s), [](Encoder& e, const auto& v) { encode_memory(e, v); });
        return;
    }
    if (s.id == kMemoryDiffSection) {
        const Section* m = f.find(kMemorySection);
        if (!m) return;
        auto layout = decode_memory(*m);
        if (!layout) return;
        round_trip_with(s, decode_memory_diff(s, *layout), [](Encoder& e, const auto& v) { encode_memory_diff(e, v); });
        return;
    }
    if (s.id.starts_with("vcpu/")) round_trip(s, decode_vcpu(s));
    else if (s.id == kUartSection) round_trip(s, decode_uart(s));
    else if (s.id == kRtcSection) round_trip(s, decode_rtc(s));
    else if (s.id == kI8042Section) round_trip(s, decode_i8042(s));
    else if (s.id == kAcpiPmSection) round_trip(s, decode_acpi_pm(s));
    else if (s.id == kIoapicSection) round_trip(s, decode_ioapic(s));
    else if (s.id == kKvmIrqchipSection) round_trip(s, decode_kvm_irqchip(s));
    else if (s.id.starts_with("virtio/")) {
        round_trip(s, decode_virtio(s));
        restore_virtio(s);
    }
    else if (s.id == kKvmClockSection) {
        auto r = decode_kvm_clock(s);
        if (!r) check_refusal(r.error());
        else check(s.payload.size() == (s.version == 1 ? 8 : 16));
    }
}

void decode(const Section& s) {
    Decoder d(s);
    // Each op consumes at least its own byte, so this ends within payload.size() steps.
    while (d.remaining() > 0) {
        size_t before = d.remaining();
        auto op = d.u8("op");
        check(op.has_value());
        uint8_t k = *op;
        before = d.remaining();
        bool ok = true;
        switch (k % 9) {
        case 0: ok = read_ok(d, d.u8("u8"), before); break;
        case 1: ok = read_ok(d, d.u16("u16"), before); break;
        case 2: ok = read_ok(d, d.u32("u32"), before); break;
        case 3: ok = read_ok(d, d.u64("u64"), before); break;
        case 4: ok = read_ok(d, d.i64("i64"), before); break;
        case 5: ok = read_ok(d, d.boolean("bool"), before); break;
        case 6: {
            uint32_t max = static_cast<uint32_t>(k >> 4) * 17;
            auto r = d.u32_max("count", max);
            ok = read_ok(d, r, before);
            if (ok) check(*r <= max);
            break;
        }
        case 7: {
            size_t n = k >> 4;
            auto r = d.bytes("raw", n);
            ok = read_ok(d, r, before);
            if (ok) check(r->size() == n && d.remaining() == before - n);
            break;
        }
        case 8: {
            auto r = d.string("name", 64);
            ok = read_ok(d, r, before);
            if (ok) check(r->size() <= 64 && d.remaining() == before - 4 - r->size());
            break;
        }
        }
        if (!ok) break;
    }
    auto fin = d.finish();
    check(fin.has_value() == (d.remaining() == 0));
    if (!fin) check_refusal(fin.error());
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
    quiet_logs();
    return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    if (size == 0) return 0;
    const bool fix_crc = data[0] & 1;
    std::vector<uint8_t> file(data + 1, data + size);
    if (fix_crc && file.size() >= 8) {
        uint64_t crc = crc64_xz(std::span(file).first(file.size() - 8));
        for (size_t i = 0; i < 8; ++i) file[file.size() - 8 + i] = static_cast<uint8_t>(crc >> (8 * i));
    }

    auto f = StateFile::parse(file);
    if (!f) {
        check_refusal(f.error());
        return 0;
    }
    check(f->format_version == kStateFormatVersion);
    check(f->sections.size() <= kMaxSections);

    StateWriter w(f->kestrel_version, f->cpu_summary);
    for (size_t i = 0; i < f->sections.size(); ++i) {
        const Section& s = f->sections[i];
        check(!s.id.empty() && s.id.size() <= kMaxSectionId);
        check(f->find(s.id) == &s);  // ids are unique, so find() lands on this one
        w.section(s.id, s.version).put_bytes(s.payload);
        decode(s);
        decode_component(*f, s);
    }
    auto again = std::move(w).finish();
    check(again.has_value());
    check(*again == file);
    return 0;
}
