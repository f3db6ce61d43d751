#include "vmm/guest_cmdline.hpp"

#include <doctest/doctest.h>

using namespace kestrel;

TEST_CASE("guest_cmdline: Firecracker's i8042.nopnp is dropped, every other word kept") {
    auto g = guest_cmdline("console=ttyS0 reboot=k panic=1 i8042.noaux i8042.nomux i8042.nopnp i8042.dumbkbd");
    CHECK(g.dropped_nopnp);
    CHECK(g.text == "console=ttyS0 reboot=k panic=1 i8042.noaux i8042.nomux i8042.dumbkbd");
    for (const char* on : {"i8042.nopnp=1", "i8042.nopnp=y", "i8042.nopnp=Y", "i8042.nopnp=on"}) {
        CAPTURE(on);
        auto t = guest_cmdline(std::string("a ") + on + " b");
        CHECK(t.dropped_nopnp);
        CHECK(t.text == "a b");
    }
}

TEST_CASE("guest_cmdline: anything else is passed byte for byte") {
    for (const char* s : {"console=ttyS0  reboot=k ", "i8042.nopnp=0 x", "i8042.nopnpx", "xi8042.nopnp",
                          "foo=\"a i8042.nopnp b\"", "ro -- i8042.nopnp", ""}) {
        CAPTURE(s);
        auto g = guest_cmdline(s);
        CHECK_FALSE(g.dropped_nopnp);
        CHECK(g.text == s);
    }
    // Before the "--" it goes, after it (init's arguments) it stays.
    CHECK(guest_cmdline("i8042.nopnp -- i8042.nopnp").text == "-- i8042.nopnp");
}
