// kvm-anchor: holds one idle KVM VM (in-kernel irqchip, one vCPU that never runs) open in the
// nested test host (L1) for as long as the cases run. Test-host plumbing, not part of kestrel.
//
// Why: KVM turns kernel static keys on when the first VM (and first in-kernel local APIC) is
// created and off when the last is destroyed (kvm_create_vm's preempt_notifier_inc(), which
// patches __schedule; the apic_hw/sw_disabled keys). Each flip live-patches kernel code with
// the INT3 protocol (text_poke_bp). In L1 under QEMU TCG that patching now and then leaves both
// vCPUs looping forever on the INT3 in __schedule with interrupts off: L1 hangs at a VM's
// start or end (seen with tools/nested/diag/vm-create-stress.sh and the hang diagnosis of
// tools/nested/hang_diag.py: both CPUs in exc_int3 from __schedule+0x2ab). With one VM always
// alive the keys never return to zero, so creating and destroying the cases' VMs patches no
// code. Production hosts (real VT-x/AMD-V) have no such problem and never run this.
//
// usage: kvm-anchor   (prints "kvm-anchor: ready" once the VM exists, then sleeps until killed)
// Exit 1 when /dev/kvm or an ioctl fails (the message says which).
#include <fcntl.h>
#include <linux/kvm.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <cerrno>

namespace {

int fail(const char* what) {
  std::fprintf(stderr, "kvm-anchor: %s: %s\n", what, std::strerror(errno));
  return 1;
}

}  // namespace

int main() {
  // The fds stay open until the process ends: that is the point.
  const int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
  if (kvm < 0) return fail("open /dev/kvm");
  const int vm = ioctl(kvm, KVM_CREATE_VM, 0);
  if (vm < 0) return fail("KVM_CREATE_VM");
  if (ioctl(vm, KVM_CREATE_IRQCHIP, 0) < 0) return fail("KVM_CREATE_IRQCHIP");
  if (ioctl(vm, KVM_CREATE_VCPU, 0) < 0) return fail("KVM_CREATE_VCPU");
  std::printf("kvm-anchor: ready\n");
  std::fflush(stdout);
  for (;;) pause();
}
