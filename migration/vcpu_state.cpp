#include "migration/vcpu_state.hpp"

#include <cstring>
#include <type_traits>

namespace kestrel::migration {

namespace {

template <typename T>
void put_struct(Encoder& e, const T& v) {
    static_assert(std::is_trivially_copyable_v<T>);
    e.put_u32(static_cast<uint32_t>(sizeof(T)));
    e.put_bytes(std::span(reinterpret_cast<const uint8_t*>(&v), sizeof(T)));
}

template <typename T>
Result<void> get_struct(Decoder& d, std::string_view id, std::string_view field, T& out) {
    uint32_t size = TRY(d.u32(field));
    if (size != sizeof(T))
        return bad_request("state: section '{}': field '{}': {} bytes, this kestrel's KVM struct has {}", id, field,
                           size, sizeof(T));
    auto b = TRY(d.bytes(field, sizeof(T)));
    std::memcpy(&out, b.data(), sizeof(T));
    return {};
}

}  // namespace

std::string vcpu_section(uint32_t index) { return "vcpu/" + std::to_string(index); }

void encode(Encoder& e, const VcpuState& s) {
    e.put_u32(static_cast<uint32_t>(s.cpuid.size()));
    for (const auto& c : s.cpuid)
        for (uint32_t v : {c.function, c.index, c.flags, c.eax, c.ebx, c.ecx, c.edx}) e.put_u32(v);
    put_struct(e, s.mp_state);
    put_struct(e, s.regs);
    put_struct(e, s.sregs);
    put_struct(e, s.xsave);
    put_struct(e, s.xcrs);
    put_struct(e, s.debugregs);
    put_struct(e, s.lapic);
    e.put_u32(static_cast<uint32_t>(s.msrs.size()));
    for (const auto& m : s.msrs) {
        e.put_u32(m.index);
        e.put_u64(m.data);
    }
    put_struct(e, s.events);
}

Result<VcpuState> decode_vcpu(const Section& sec) {
    Decoder d = TRY(Decoder::of(sec, kVcpuStateVersion));
    VcpuState s;
    const uint32_t nc = TRY(d.u32_max("cpuid", kMaxCpuidEntries));
    if (uint64_t{nc} * 28 > d.remaining())
        return bad_request("state: section '{}': field 'cpuid': {} entries need {} bytes, {} left", sec.id, nc,
                           uint64_t{nc} * 28, d.remaining());
    s.cpuid.resize(nc);
    for (auto& c : s.cpuid)
        for (uint32_t* v : {&c.function, &c.index, &c.flags, &c.eax, &c.ebx, &c.ecx, &c.edx}) *v = TRY(d.u32("cpuid"));
    TRY(get_struct(d, sec.id, "mp_state", s.mp_state));
    TRY(get_struct(d, sec.id, "regs", s.regs));
    TRY(get_struct(d, sec.id, "sregs", s.sregs));
    TRY(get_struct(d, sec.id, "xsave", s.xsave));
    TRY(get_struct(d, sec.id, "xcrs", s.xcrs));
    TRY(get_struct(d, sec.id, "debugregs", s.debugregs));
    TRY(get_struct(d, sec.id, "lapic", s.lapic));
    uint32_t n = TRY(d.u32_max("msrs", kMaxMsrs));
    // Checked against the bytes left before anything is sized by it.
    if (uint64_t{n} * 12 > d.remaining())
        return bad_request("state: section '{}': field 'msrs': {} entries need {} bytes, {} left", sec.id, n,
                           uint64_t{n} * 12, d.remaining());
    s.msrs.resize(n);
    uint32_t previous = 0;
    for (uint32_t i = 0; i < n; ++i) {
        s.msrs[i].index = TRY(d.u32("msrs"));
        s.msrs[i].data = TRY(d.u64("msrs"));
        if (i > 0 && s.msrs[i].index <= previous)
            return bad_request("state: section '{}': field 'msrs': MSR {:#x} after {:#x} (not in ascending order)",
                               sec.id, s.msrs[i].index, previous);
        previous = s.msrs[i].index;
    }
    TRY(get_struct(d, sec.id, "events", s.events));
    TRY(d.finish());
    return s;
}

std::string cpuid_difference(const std::vector<kvm_cpuid_entry2>& saved, const std::vector<kvm_cpuid_entry2>& mine) {
    auto find = [](const std::vector<kvm_cpuid_entry2>& v, uint32_t fn, uint32_t idx) -> const kvm_cpuid_entry2* {
        for (const auto& e : v)
            if (e.function == fn && e.index == idx) return &e;
        return nullptr;
    };
    for (const auto& s : saved) {
        const kvm_cpuid_entry2* m = find(mine, s.function, s.index);
        if (!m) return fmt::format("leaf {:#x} index {}: saved, not given here", s.function, s.index);
        const std::pair<const char*, std::pair<uint32_t, uint32_t>> regs[] = {
            {"eax", {s.eax, m->eax}}, {"ebx", {s.ebx, m->ebx}}, {"ecx", {s.ecx, m->ecx}}, {"edx", {s.edx, m->edx}}};
        for (const auto& [name, v] : regs)
            if (v.first != v.second)
                return fmt::format("leaf {:#x} index {}: {} {:#010x} saved, {:#010x} here", s.function, s.index, name,
                                   v.first, v.second);
    }
    for (const auto& m : mine)
        if (!find(saved, m.function, m.index))
            return fmt::format("leaf {:#x} index {}: given here, not saved", m.function, m.index);
    return {};
}

void encode_kvm_clock(Encoder& e, const KvmClockState& c) {
    e.put_u64(c.clock_ns);
    e.put_u64(c.realtime_ns);
}

void encode(Encoder& e, const KvmIrqchipState& s) {
    for (const auto& c : s.chips) put_struct(e, c);
    put_struct(e, s.pit);
}

Result<KvmIrqchipState> decode_kvm_irqchip(const Section& sec) {
    Decoder d = TRY(Decoder::of(sec, kKvmIrqchipVersion));
    KvmIrqchipState s;
    static constexpr const char* kNames[] = {"pic_master", "pic_slave", "ioapic"};
    for (uint32_t i = 0; i < 3; ++i) {
        TRY(get_struct(d, sec.id, kNames[i], s.chips[i]));
        if (s.chips[i].chip_id != i)
            return bad_request("state: section '{}': field '{}': chip_id {}, expected {}", sec.id, kNames[i],
                               s.chips[i].chip_id, i);
    }
    TRY(get_struct(d, sec.id, "pit", s.pit));
    TRY(d.finish());
    return s;
}

Result<KvmClockState> decode_kvm_clock(const Section& sec) {
    Decoder d = TRY(Decoder::of(sec, sec.version == 1 ? 1 : kKvmClockVersion));
    KvmClockState c;
    c.clock_ns = TRY(d.u64("clock"));
    if (sec.version != 1) c.realtime_ns = TRY(d.u64("realtime"));
    TRY(d.finish());
    return c;
}

}  // namespace kestrel::migration
