#include "vmm/arch/x86/cpuid.hpp"

#include <algorithm>
#include <bit>
#include <cstring>

namespace kestrel::x86 {

namespace {

constexpr uint32_t kLeafFeatures = 0x1;
constexpr uint32_t kLeafCacheParams = 0x4;
constexpr uint32_t kLeafExtTopology = 0xb;
constexpr uint32_t kLeafV2ExtTopology = 0x1f;
constexpr uint32_t kLeafKvmSignature = 0x40000000;  // KVM api.rst "KVM CPUID bits" (cpuid.rst)
constexpr uint32_t kLeafKvmFeatures = 0x40000001;
constexpr uint32_t kLeafAmdAddressSizes = 0x80000008;
constexpr uint32_t kLeafAmdExtApicId = 0x8000001e;

uint32_t bits_for(uint32_t n) { return n <= 1 ? 0 : static_cast<uint32_t>(std::bit_width(n - 1)); }

void set_field(uint32_t& reg, unsigned lo, unsigned width, uint32_t value) {
    uint32_t mask = (width >= 32 ? ~0u : ((1u << width) - 1)) << lo;
    reg = (reg & ~mask) | ((value << lo) & mask);
}

// Intel SDM vol. 2A CPUID leaf 0BH: level 0 = SMT (1 thread per core), level 1 = core.
kvm_cpuid_entry2 topology_entry(uint32_t function, uint32_t index, uint32_t apic_id,
                                uint32_t num_vcpus) {
    kvm_cpuid_entry2 e{};
    e.function = function;
    e.index = index;
    e.flags = KVM_CPUID_FLAG_SIGNIFCANT_INDEX;
    e.edx = apic_id;
    if (index == 0) {
        e.eax = 0;
        e.ebx = 1;
        e.ecx = (1u << 8) | index;
    } else if (index == 1) {
        e.eax = bits_for(num_vcpus);
        e.ebx = num_vcpus;
        e.ecx = (2u << 8) | index;
    } else {
        e.ecx = index;  // level type 0: invalid, ends the enumeration
    }
    return e;
}

}  // namespace

std::vector<kvm_cpuid_entry2> build_cpuid(const std::vector<kvm_cpuid_entry2>& supported,
                                          uint32_t vcpu_index, uint32_t num_vcpus) {
    std::vector<kvm_cpuid_entry2> out;
    out.reserve(supported.size() + 6);
    uint32_t max_basic = 0;
    for (const auto& e : supported)
        if (e.function == 0) max_basic = e.eax;
    const uint32_t apic_id = vcpu_index;

    for (auto e : supported) {
        switch (e.function) {
        case kLeafFeatures:
            set_field(e.ebx, 24, 8, apic_id);       // initial APIC ID
            set_field(e.ebx, 16, 8, num_vcpus);     // logical processors per package
            e.ecx |= 1u << 31;                      // running under a hypervisor
            if (num_vcpus > 1) e.edx |= 1u << 28;   // HTT: the package field is valid
            break;
        case kLeafCacheParams:
            // EAX[31:26] cores per package - 1; EAX[25:14] threads sharing this cache - 1
            // (the last level is shared by all vCPUs, the others are per core).
            if ((e.eax & 0x1f) != 0) {
                uint32_t level = (e.eax >> 5) & 0x7;
                set_field(e.eax, 26, 6, num_vcpus - 1);
                set_field(e.eax, 14, 12, level >= 3 ? num_vcpus - 1 : 0);
            }
            break;
        case kLeafExtTopology:
        case kLeafV2ExtTopology:
            continue;  // rebuilt below
        case kLeafKvmSignature:
            e.eax = std::max(e.eax, kLeafKvmFeatures);
            std::memcpy(&e.ebx, "KVMK", 4);
            std::memcpy(&e.ecx, "VMKV", 4);
            std::memcpy(&e.edx, "M\0\0\0", 4);
            break;
        case kLeafAmdAddressSizes:
            // AMD APM vol. 3, CPUID Fn8000_0008 ECX: NC = cores - 1, ApicIdSize.
            set_field(e.ecx, 0, 8, num_vcpus - 1);
            set_field(e.ecx, 12, 4, bits_for(num_vcpus));
            break;
        case kLeafAmdExtApicId:
            // Fn8000_001E: extended APIC ID, core ID with one thread per core, node 0.
            e.eax = apic_id;
            e.ebx = apic_id & 0xff;
            e.ecx = 0;
            break;
        default:
            break;
        }
        out.push_back(e);
    }
    if (max_basic >= kLeafExtTopology)
        for (uint32_t i = 0; i < 3; ++i)
            out.push_back(topology_entry(kLeafExtTopology, i, apic_id, num_vcpus));
    if (max_basic >= kLeafV2ExtTopology)
        for (uint32_t i = 0; i < 3; ++i)
            out.push_back(topology_entry(kLeafV2ExtTopology, i, apic_id, num_vcpus));
    return out;
}

}  // namespace kestrel::x86
