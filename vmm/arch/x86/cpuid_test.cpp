#include "vmm/arch/x86/cpuid.hpp"

#include <doctest/doctest.h>

#include <cstring>
#include <string>

using namespace kestrel;

namespace {
kvm_cpuid_entry2 leaf(uint32_t f, uint32_t idx = 0, uint32_t eax = 0, uint32_t ebx = 0,
                      uint32_t ecx = 0, uint32_t edx = 0) {
    kvm_cpuid_entry2 e{};
    e.function = f;
    e.index = idx;
    e.eax = eax;
    e.ebx = ebx;
    e.ecx = ecx;
    e.edx = edx;
    return e;
}
const kvm_cpuid_entry2* find(const std::vector<kvm_cpuid_entry2>& v, uint32_t f, uint32_t i = 0) {
    for (auto& e : v)
        if (e.function == f && e.index == i) return &e;
    return nullptr;
}
}  // namespace

TEST_CASE("cpuid: topology leaves describe N cores with APIC ID = vCPU index") {
    std::vector<kvm_cpuid_entry2> sup{
        leaf(0, 0, 0x1f), leaf(1, 0, 0x806f8, 0x00ff0800, 0x1, 0x0),
        leaf(4, 0, 0x121), leaf(4, 3, 0x163),  // L1 data, L3 unified
        leaf(0xb, 0, 1, 2, 0x100, 7), leaf(0x40000000, 0, 0x40000001),
        leaf(0x80000008, 0, 0x3030, 0, 0xff), leaf(0x8000001e, 0, 9, 0x100, 0)};
    auto v = x86::build_cpuid(sup, 2, 4);

    auto* l1 = find(v, 1);
    REQUIRE(l1);
    CHECK((l1->ebx >> 24) == 2);
    CHECK(((l1->ebx >> 16) & 0xff) == 4);
    CHECK((l1->ebx & 0xffff) == 0x0800);  // CLFLUSH size and brand kept
    CHECK((l1->ecx >> 31) == 1);
    CHECK(((l1->edx >> 28) & 1) == 1);

    CHECK((find(v, 4, 0)->eax >> 26) == 3);
    CHECK(((find(v, 4, 0)->eax >> 14) & 0xfff) == 0);
    CHECK(((find(v, 4, 3)->eax >> 14) & 0xfff) == 3);

    auto* smt = find(v, 0xb, 0);
    auto* core = find(v, 0xb, 1);
    auto* end = find(v, 0xb, 2);
    REQUIRE(smt);
    REQUIRE(core);
    REQUIRE(end);
    CHECK(smt->ebx == 1);
    CHECK(core->eax == 2);  // 4 vCPUs need 2 bits of APIC ID
    CHECK(core->ebx == 4);
    CHECK(((core->ecx >> 8) & 0xff) == 2);
    CHECK(((end->ecx >> 8) & 0xff) == 0);
    CHECK(core->edx == 2);
    CHECK(find(v, 0x1f, 1));  // max leaf 0x1f: the v2 leaf mirrors 0xb

    auto* sig = find(v, 0x40000000);
    char s[13] = {};
    std::memcpy(s, &sig->ebx, 4);
    std::memcpy(s + 4, &sig->ecx, 4);
    std::memcpy(s + 8, &sig->edx, 4);
    CHECK(std::string(s) == "KVMKVMKVM");

    CHECK((find(v, 0x80000008)->ecx & 0xff) == 3);
    CHECK(find(v, 0x8000001e)->eax == 2);
}

TEST_CASE("cpuid: a single vCPU does not claim HTT") {
    std::vector<kvm_cpuid_entry2> sup{leaf(0, 0, 0xd), leaf(1, 0, 0, 0, 0, 0)};
    auto v = x86::build_cpuid(sup, 0, 1);
    CHECK(((find(v, 1)->edx >> 28) & 1) == 0);
    CHECK(find(v, 0xb, 1)->eax == 0);
}
