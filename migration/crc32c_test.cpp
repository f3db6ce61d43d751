#include "migration/crc32c.hpp"

#include <doctest/doctest.h>

#include <string_view>
#include <vector>

using namespace kestrel::migration;

TEST_CASE("crc32c: check value, pieces, and every length the 8-byte loop splits") {
    std::string_view check = "123456789";
    auto bytes = [](std::string_view s) { return std::span(reinterpret_cast<const uint8_t*>(s.data()), s.size()); };
    CHECK(crc32c(bytes(check)) == 0xE3069283u);
    CHECK(crc32c(bytes(check.substr(4)), crc32c(bytes(check.substr(0, 4)))) == 0xE3069283u);
    CHECK(crc32c({}) == 0u);
    // A bitwise reference for lengths around the 8-byte steps.
    std::vector<uint8_t> data(40);
    for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<uint8_t>(i * 37 + 11);
    for (size_t n = 0; n <= data.size(); ++n) {
        uint32_t c = 0xffffffffu;
        for (size_t i = 0; i < n; ++i) {
            c ^= data[i];
            for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
        }
        CAPTURE(n);
        CHECK(crc32c(std::span(data).first(n)) == ~c);
    }
}
