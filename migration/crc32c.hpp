// CRC-32C (Castagnoli, reflected 0x82F63B78, init and xorout all ones): what checksums every
// message of a live-migration stream (migration/migration_stream.hpp). With SSE4.2 (every
// x86-64-v2 CPU, so every host KVM runs on in practice) the CPU's crc32 instruction does
// 8 bytes at a time; otherwise a table. Check value: crc32c("123456789") == 0xE3069283.
#pragma once

#include <cstdint>
#include <span>

namespace kestrel::migration {

// CRC of `data`, continuing from `crc` (the result over the bytes before it; 0 to start).
uint32_t crc32c(std::span<const uint8_t> data, uint32_t crc = 0);

}  // namespace kestrel::migration
