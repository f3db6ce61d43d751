#include "migration/vcpu_state.hpp"

#include <doctest/doctest.h>

#include <cstring>
#include <string>

using namespace kestrel;
using namespace kestrel::migration;

namespace {

VcpuState busy_vcpu() {
    VcpuState s;
    s.cpuid = {{.function = 0, .index = 0, .flags = 0, .eax = 0x10, .ebx = 0x68747541, .ecx = 0x444d4163,
                .edx = 0x69746e65, .padding = {}},
               {.function = 7, .index = 0, .flags = 1, .eax = 0, .ebx = 0x219c91a9, .ecx = 0, .edx = 0, .padding = {}}};
    s.mp_state.mp_state = KVM_MP_STATE_HALTED;
    s.regs.rip = 0xffffffff81000000ull;
    s.regs.rsp = 0x7fff0000;
    s.regs.rflags = 0x246;
    s.sregs.cr0 = 0x80050033;
    s.sregs.cr4 = 0x3506f0;
    s.sregs.efer = 0xd01;
    s.sregs.cs.selector = 0x10;
    s.sregs.cs.l = 1;
    for (size_t i = 0; i < s.xsave.size(); ++i) s.xsave[i] = static_cast<uint32_t>(i * 2654435761u);
    s.xcrs.nr_xcrs = 1;
    s.xcrs.xcrs[0].value = 7;
    s.debugregs.dr7 = 0x400;
    for (size_t i = 0; i < sizeof s.lapic.regs; ++i) s.lapic.regs[i] = static_cast<char>(i);
    s.msrs = {{.index = 0x10, .reserved = 0, .data = 123456789}, {.index = 0x174, .reserved = 0, .data = 0x10},
              {.index = 0x6e0, .reserved = 0, .data = 1}, {.index = 0xc0000080, .reserved = 0, .data = 0xd01}};
    s.events.exception.injected = 1;
    s.events.exception.nr = 14;
    return s;
}

Section section_of(const VcpuState& s, uint32_t version = kVcpuStateVersion) {
    StateWriter w("test", "test cpu");
    encode(w.section(vcpu_section(0), version), s);
    auto bytes = std::move(w).finish();
    REQUIRE(bytes.has_value());
    auto f = StateFile::parse(*bytes);
    REQUIRE(f.has_value());
    return f->sections.at(0);
}

std::string refused(const Result<VcpuState>& r) {
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error().kind == ErrorKind::BadRequest);
    return r.error().message;
}

bool contains(const std::string& s, std::string_view part) { return s.find(part) != std::string::npos; }

// Offset of the MSR count in a version-1 payload: eight u32-size-prefixed structs before it,
// all but the last (events) ahead of the MSRs.
size_t msr_count_offset() {
    return 4 + 2 * 28 + 7 * 4 + sizeof(kvm_mp_state) + sizeof(kvm_regs) + sizeof(kvm_sregs) + 4096 + sizeof(kvm_xcrs) +
           sizeof(kvm_debugregs) + sizeof(kvm_lapic_state);
}

}  // namespace

TEST_CASE("vcpu state: every register block and MSR comes back bit for bit") {
    const VcpuState s = busy_vcpu();
    CHECK(vcpu_section(3) == "vcpu/3");
    auto back = decode_vcpu(section_of(s));
    REQUIRE(back.has_value());
    REQUIRE(back->cpuid.size() == 2);
    CHECK(cpuid_difference(back->cpuid, s.cpuid).empty());
    CHECK(back->cpuid[1].flags == 1);
    CHECK(std::memcmp(&back->mp_state, &s.mp_state, sizeof s.mp_state) == 0);
    CHECK(std::memcmp(&back->regs, &s.regs, sizeof s.regs) == 0);
    CHECK(std::memcmp(&back->sregs, &s.sregs, sizeof s.sregs) == 0);
    CHECK(back->xsave == s.xsave);
    CHECK(std::memcmp(&back->xcrs, &s.xcrs, sizeof s.xcrs) == 0);
    CHECK(std::memcmp(&back->debugregs, &s.debugregs, sizeof s.debugregs) == 0);
    CHECK(std::memcmp(&back->lapic, &s.lapic, sizeof s.lapic) == 0);
    REQUIRE(back->msrs.size() == s.msrs.size());
    for (size_t i = 0; i < s.msrs.size(); ++i) {
        CHECK(back->msrs[i].index == s.msrs[i].index);
        CHECK(back->msrs[i].data == s.msrs[i].data);
    }
    CHECK(std::memcmp(&back->events, &s.events, sizeof s.events) == 0);
    CHECK(section_of(s).payload.size() == msr_count_offset() + 4 + 12 * s.msrs.size() + 4 + sizeof(kvm_vcpu_events));
}

TEST_CASE("vcpu state: a CPUID of another host is told apart, naming the leaf and register") {
    const auto mine = busy_vcpu().cpuid;
    CHECK(cpuid_difference(mine, mine).empty());
    auto other = mine;
    std::swap(other[0], other[1]);
    CHECK(cpuid_difference(other, mine).empty());  // order does not matter
    other[0].ebx ^= 1u << 5;                        // leaf 7: AVX2 gone
    CHECK(cpuid_difference(other, mine) == "leaf 0x7 index 0: ebx 0x219c9189 saved, 0x219c91a9 here");
    other = mine;
    other.pop_back();
    CHECK(cpuid_difference(other, mine) == "leaf 0x7 index 0: given here, not saved");
    CHECK(cpuid_difference(mine, other) == "leaf 0x7 index 0: saved, not given here");
}

TEST_CASE("vcpu state: the kvm-clock section") {
    StateWriter w("test", "cpu");
    encode_kvm_clock(w.section(kKvmClockSection, kKvmClockVersion), {987654321, 1'700'000'000'123'456'789});
    auto f = StateFile::parse(*std::move(w).finish());
    REQUIRE(f.has_value());
    CHECK(decode_kvm_clock(f->sections[0]) == KvmClockState{987654321, 1'700'000'000'123'456'789});
    Section cut = f->sections[0];
    cut.payload.resize(15);
    auto short_one = decode_kvm_clock(cut);
    REQUIRE_FALSE(short_one.has_value());
    CHECK(short_one.error().what().find("field 'realtime'") != std::string::npos);
    // Version 1 (before KVM_CLOCK_REALTIME was kept): the clock alone.
    Section v1 = f->sections[0];
    v1.version = 1;
    v1.payload.resize(8);
    CHECK(decode_kvm_clock(v1) == KvmClockState{987654321, 0});
    v1.payload.resize(16);
    CHECK_FALSE(decode_kvm_clock(v1).has_value());  // trailing bytes
    Section v3 = f->sections[0];
    v3.version = 3;
    CHECK_FALSE(decode_kvm_clock(v3).has_value());
}

TEST_CASE("vcpu state: the kvm-irqchip section (--pit) round-trips and checks each chip_id") {
    KvmIrqchipState st;
    for (uint32_t i = 0; i < 3; ++i) {
        st.chips[i].chip_id = i;
        st.chips[i].chip.pic.irr = static_cast<uint8_t>(0x10 + i);
    }
    st.chips[2].chip.ioapic.redirtbl[5].bits = 0x1234'5678'9abc;
    st.pit.channels[0].count = 0xffff;
    st.pit.flags = 1;
    StateWriter w("test", "cpu");
    encode(w.section(kKvmIrqchipSection, kKvmIrqchipVersion), st);
    auto f = StateFile::parse(*std::move(w).finish());
    REQUIRE(f.has_value());
    auto back = decode_kvm_irqchip(f->sections[0]);
    REQUIRE(back);
    CHECK(std::memcmp(&*back, &st, sizeof st) == 0);
    Section swapped = f->sections[0];
    swapped.payload[4] = 1;  // pic_master's chip_id says slave
    auto r = decode_kvm_irqchip(swapped);
    REQUIRE_FALSE(r);
    CHECK(contains(r.error().message, "chip_id 1, expected 0"));
    Section cut = f->sections[0];
    cut.payload.pop_back();
    CHECK_FALSE(decode_kvm_irqchip(cut));
}

TEST_CASE("vcpu state: hostile payloads are refused naming the field") {
    SUBCASE("a register block of another size") {
        Section sec = section_of(busy_vcpu());
        sec.payload[4 + 2 * 28 + 4 + sizeof(kvm_mp_state)] = 145;  // regs' size prefix: 144 on x86-64
        auto msg = refused(decode_vcpu(sec));
        CHECK(contains(msg, "'regs'"));
        CHECK(contains(msg, "145 bytes"));
    }
    SUBCASE("a CPUID count beyond the bound, or beyond the bytes left") {
        Section sec = section_of(busy_vcpu());
        for (int i = 0; i < 4; ++i) sec.payload[i] = 0xff;
        CHECK(contains(refused(decode_vcpu(sec)), "'cpuid'"));
        sec = section_of(busy_vcpu());
        sec.payload[0] = 0;
        sec.payload[1] = 0x03;  // 768 entries: 21504 bytes
        sec.payload.resize(1000);
        CHECK(contains(refused(decode_vcpu(sec)), "768 entries"));
    }
    SUBCASE("an MSR count beyond the bound") {
        Section sec = section_of(busy_vcpu());
        for (int i = 0; i < 4; ++i) sec.payload[msr_count_offset() + i] = 0xff;
        CHECK(contains(refused(decode_vcpu(sec)), "'msrs'"));
    }
    SUBCASE("an MSR count the bytes left cannot hold") {
        Section sec = section_of(busy_vcpu());
        sec.payload[msr_count_offset()] = 0;
        sec.payload[msr_count_offset() + 1] = 0x0f;  // 3840 entries
        auto msg = refused(decode_vcpu(sec));
        CHECK(contains(msg, "3840 entries"));
    }
    SUBCASE("MSRs out of order") {
        VcpuState s = busy_vcpu();
        std::swap(s.msrs[0], s.msrs[2]);
        CHECK(contains(refused(decode_vcpu(section_of(s))), "ascending"));
    }
    SUBCASE("bytes left over, and a version this kestrel does not read") {
        Section sec = section_of(busy_vcpu());
        sec.payload.push_back(0);
        CHECK(contains(refused(decode_vcpu(sec)), "left over"));
        CHECK(contains(refused(decode_vcpu(section_of(busy_vcpu(), 2))), "version 2"));
    }
    SUBCASE("truncated anywhere") {
        const Section full = section_of(busy_vcpu());
        for (size_t cut : {size_t{0}, size_t{3}, size_t{100}, msr_count_offset() + 2, full.payload.size() - 1}) {
            CAPTURE(cut);
            Section sec = full;
            sec.payload.resize(cut);
            refused(decode_vcpu(sec));
        }
    }
}
