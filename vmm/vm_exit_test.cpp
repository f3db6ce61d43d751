#include "vmm/vm_exit.hpp"

#include <doctest/doctest.h>

#include <chrono>
#include <thread>

using namespace kestrel;
using namespace std::chrono_literals;

TEST_CASE("VmControl: a power-off during a vCPU's shutdown grace period wins") {
    VmControl ctl;
    std::thread vcpu1([&] { ctl.request({ExitKind::TripleFault, 0, "AP shut down"}); });
    vcpu1.join();
    CHECK_FALSE(ctl.stopping());  // the other vCPUs keep running for now
    std::thread vcpu0([&] {
        std::this_thread::sleep_for(20ms);
        ctl.request({ExitKind::PowerOff, 0, "guest powered off"});
    });
    GuestExit e = ctl.wait();
    vcpu0.join();
    CHECK(e.kind == ExitKind::PowerOff);
    CHECK(exit_code_for(e) == kExitPowerOff);
    CHECK(ctl.stopping());
}

TEST_CASE("VmControl: a lone shutdown ends the VM as a triple fault after the grace period") {
    VmControl ctl;
    auto t0 = std::chrono::steady_clock::now();
    ctl.request({ExitKind::TripleFault, 0, "triple fault"});
    ctl.request({ExitKind::TripleFault, 0, "second vCPU"});  // the first one is kept
    GuestExit e = ctl.wait();
    CHECK(e.kind == ExitKind::TripleFault);
    CHECK(e.message == "triple fault");
    CHECK(exit_code_for(e) == kExitTripleFault);
    CHECK(std::chrono::steady_clock::now() - t0 >= VmControl::kShutdownGrace);
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
