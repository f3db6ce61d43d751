#include "vmm/vm_exit.hpp"

#include <doctest/doctest.h>

using namespace kestrel;

TEST_CASE("VmControl: a vCPU's shutdown ends the VM as a triple fault") {
    VmControl ctl;
    ctl.request({ExitKind::TripleFault, 0, "triple fault"});
    CHECK(ctl.stopping());
    ctl.request({ExitKind::TripleFault, 0, "second vCPU"});  // the first one is kept
    GuestExit e = ctl.wait();
    CHECK(e.kind == ExitKind::TripleFault);
    CHECK(e.message == "triple fault");
    CHECK(exit_code_for(e) == kExitTripleFault);
    ctl.request({ExitKind::PowerOff, 0, "too late"});  // after the verdict: ignored
    CHECK(ctl.wait().kind == ExitKind::TripleFault);
}

TEST_CASE("VmControl: the first clean ending wins and wakes the event loop") {
    VmControl ctl;
    ctl.request({ExitKind::DebugExit, 42, "debug exit"});
    ctl.request({ExitKind::PowerOff, 0, "later"});
    CHECK(ctl.wait().code == 42);
    uint64_t n = 0;
    CHECK(::read(ctl.wake_fd(), &n, sizeof n) == sizeof n);
    CHECK(n == 1);
}
