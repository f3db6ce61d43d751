#include "migration/crc64.hpp"

#include <array>

namespace kestrel::migration {

namespace {

constexpr uint64_t kReflectedPoly = 0xC96C5795D7870F42ull;

// Byte-at-a-time table, built at compile time: state files are a few KiB to MiB of device
// state, so slicing-by-8 would buy nothing worth its 14 KiB of extra table.
constexpr std::array<uint64_t, 256> make_table() {
    std::array<uint64_t, 256> t{};
    for (uint64_t i = 0; i < 256; ++i) {
        uint64_t c = i;
        for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ kReflectedPoly : c >> 1;
        t[i] = c;
    }
    return t;
}

constexpr std::array<uint64_t, 256> kTable = make_table();

}  // namespace

uint64_t crc64_xz(std::span<const uint8_t> data, uint64_t crc) {
    // The stored CRC is the register inverted (xorout): undo that to continue from it.
    uint64_t c = ~crc;
    for (uint8_t b : data) c = kTable[(c ^ b) & 0xff] ^ (c >> 8);
    return ~c;
}

}  // namespace kestrel::migration
