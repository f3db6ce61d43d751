#include "devices/bus.hpp"

#include <doctest/doctest.h>

#include <vector>

using namespace kestrel;

namespace {
struct Recorder : BusDevice {
    std::vector<uint64_t> offsets;
    void read(uint64_t off, std::span<uint8_t> d) override {
        offsets.push_back(off);
        for (auto& b : d) b = 0x5a;
    }
    void write(uint64_t off, std::span<const uint8_t>) override { offsets.push_back(off); }
};
}  // namespace

TEST_CASE("bus: dispatch by range, offsets relative, overlaps refused") {
    Bus bus("pio");
    auto a = std::make_shared<Recorder>();
    REQUIRE(bus.insert(0x3f8, 8, a));
    CHECK_FALSE(bus.insert(0x3fc, 8, a));
    CHECK_FALSE(bus.insert(0x10, 0, a));
    CHECK_FALSE(bus.insert(~uint64_t{0} - 1, 8, a));
    uint8_t v[2];
    CHECK(bus.read(0x3fd, std::span(v, 1)));
    CHECK(v[0] == 0x5a);
    CHECK_FALSE(bus.read(0x3ff, std::span(v, 2)));  // straddles the end
    CHECK(v[0] == 0xff);
    CHECK_FALSE(bus.write(0x3f7, std::span<const uint8_t>(v, 1)));
    CHECK(a->offsets == std::vector<uint64_t>{5});
}
