// KVM ioctls whose argument ends in a flexible array, with C layouts spelled out.
// Debian 12's uapi headers (linux-libc-dev 6.1) declare those arrays with
// __DECLARE_FLEX_ARRAY, which in C++ wraps an empty struct: sizeof(kvm_cpuid2) becomes 12
// instead of 8, so both the ioctl numbers (they encode the size) and the `entries` offset
// are wrong for C++. These headers mirror the C layout (api.rst §4.46, §4.19, §4.52).
#pragma once

#include <linux/kvm.h>
#include <sys/ioctl.h>

#include <cstdint>

namespace kestrel::kvm::uapi {

struct FlexHeader {  // kvm_cpuid2 / kvm_msrs / kvm_irq_routing: two u32, then entries
    uint32_t count;
    uint32_t flags_or_pad;
};
static_assert(sizeof(FlexHeader) == 8);
struct MsrListHeader {  // kvm_msr_list: u32 nmsrs, then u32 indices
    uint32_t nmsrs;
};

inline constexpr unsigned long kGetSupportedCpuid = _IOWR(KVMIO, 0x05, FlexHeader);
inline constexpr unsigned long kSetCpuid2 = _IOW(KVMIO, 0x90, FlexHeader);
inline constexpr unsigned long kGetMsrs = _IOWR(KVMIO, 0x88, FlexHeader);
inline constexpr unsigned long kSetMsrs = _IOW(KVMIO, 0x89, FlexHeader);
inline constexpr unsigned long kSetGsiRouting = _IOW(KVMIO, 0x6a, FlexHeader);
inline constexpr unsigned long kGetMsrIndexList = _IOWR(KVMIO, 0x02, MsrListHeader);

}  // namespace kestrel::kvm::uapi
