// run_vm: builds a VM from a VmConfig and runs it to its end, top to bottom in one place:
// images -> KVM -> guest memory -> irqchip -> ACPI + boot structures -> devices -> vCPUs ->
// event loop -> wait -> stop.
#pragma once

#include "vmm/vm_config.hpp"
#include "vmm/vm_exit.hpp"

namespace kestrel {

// An error means the VM could not be built; a GuestExit says how a built VM ended.
Result<GuestExit> run_vm(const VmConfig& cfg);

}  // namespace kestrel
