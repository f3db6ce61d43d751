#include "devices/legacy/debug_exit.hpp"

#include <doctest/doctest.h>

#include <vector>

using namespace kestrel;

TEST_CASE("debug-exit: a write hands the value to on_exit; reads return 0") {
    std::vector<uint32_t> codes;
    DebugExit dev([&](uint32_t code) { codes.push_back(code); });
    const uint8_t one = 0x31;
    dev.write(0, std::span(&one, 1));
    const uint8_t four[4] = {0x78, 0x56, 0x34, 0x12};
    dev.write(0, std::span(four));
    CHECK(codes == std::vector<uint32_t>{0x31, 0x12345678});
    uint8_t r[2] = {0xee, 0xee};
    dev.read(0, std::span(r));
    CHECK(r[0] == 0);
    CHECK(r[1] == 0);
}
