#include "migration/crc32c.hpp"

#include <array>
#include <cstring>

namespace kestrel::migration {

namespace {

constexpr std::array<uint32_t, 256> make_table() {
    std::array<uint32_t, 256> t{};
    for (uint32_t i = 0; i < 256; ++i) {
        uint32_t c = i;
        for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
        t[i] = c;
    }
    return t;
}
constexpr std::array<uint32_t, 256> kTable = make_table();

uint32_t table_crc(const uint8_t* p, size_t n, uint32_t c) {
    while (n--) c = kTable[(c ^ *p++) & 0xff] ^ (c >> 8);
    return c;
}

__attribute__((target("sse4.2"))) uint32_t hw_crc(const uint8_t* p, size_t n, uint32_t c) {
    uint64_t c64 = c;
    for (; n >= 8; n -= 8, p += 8) {
        uint64_t v;
        std::memcpy(&v, p, 8);
        c64 = __builtin_ia32_crc32di(c64, v);
    }
    c = static_cast<uint32_t>(c64);
    for (; n; --n) c = __builtin_ia32_crc32qi(c, *p++);
    return c;
}

const bool kHaveSse42 = __builtin_cpu_supports("sse4.2");

}  // namespace

uint32_t crc32c(std::span<const uint8_t> data, uint32_t crc) {
    const uint32_t c = ~crc;
    return ~(kHaveSse42 ? hw_crc(data.data(), data.size(), c) : table_crc(data.data(), data.size(), c));
}

}  // namespace kestrel::migration
