// CRC-64/XZ: the checksum that closes a state stream (migration/state_stream.hpp). ECMA-182
// polynomial 0x42F0E1EBA9EA3693, reflected (0xC96C5795D7870F42), init and xorout all ones:
// the CRC xz and many tools compute, so a state file can be checked outside kestrel.
// Check value: crc64_xz("123456789") == 0x995DC9BBDF1939FA.
#pragma once

#include <cstdint>
#include <span>

namespace kestrel::migration {

// CRC of `data`, continuing from `crc` (the result over the bytes before it; 0 to start):
// crc64_xz(b, crc64_xz(a)) == crc64_xz(a followed by b), so a writer can checksum in pieces.
uint64_t crc64_xz(std::span<const uint8_t> data, uint64_t crc = 0);

}  // namespace kestrel::migration
