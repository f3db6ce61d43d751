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

// kvm_xsave is 4096 bytes of region plus a flexible `extra` array the same C++ problem makes
// 4 bytes long, so KVM_GET_XSAVE's number would encode 4100 and KVM would not know it
// (api.rst §4.42). The legacy 4 KiB area: what KVM_CAP_XSAVE2 reports unless the VMM enabled
// a dynamic feature (AMX) with arch_prctl, which kestrel does not.
struct Xsave {
    uint32_t region[1024];
};
static_assert(sizeof(Xsave) == 4096);
inline constexpr unsigned long kGetXsave = _IOR(KVMIO, 0xa4, Xsave);
inline constexpr unsigned long kSetXsave = _IOW(KVMIO, 0xa5, Xsave);

inline constexpr unsigned long kGetSupportedCpuid = _IOWR(KVMIO, 0x05, FlexHeader);
inline constexpr unsigned long kSetCpuid2 = _IOW(KVMIO, 0x90, FlexHeader);
inline constexpr unsigned long kGetMsrs = _IOWR(KVMIO, 0x88, FlexHeader);
inline constexpr unsigned long kSetMsrs = _IOW(KVMIO, 0x89, FlexHeader);
inline constexpr unsigned long kSetGsiRouting = _IOW(KVMIO, 0x6a, FlexHeader);
inline constexpr unsigned long kGetMsrIndexList = _IOWR(KVMIO, 0x02, MsrListHeader);

}  // namespace kestrel::kvm::uapi
