// Per-vCPU CPUID table: KVM's supported list with the topology leaves rewritten for N vCPUs
// (one socket, N cores, one thread each; APIC ID = vCPU index) and KVM's paravirtual leaves.
#pragma once

#include <linux/kvm.h>

#include <cstdint>
#include <vector>

namespace kestrel::x86 {

std::vector<kvm_cpuid_entry2> build_cpuid(const std::vector<kvm_cpuid_entry2>& supported,
                                          uint32_t vcpu_index, uint32_t num_vcpus);

}  // namespace kestrel::x86
