// VmConfig: everything `kestrel run` was asked for, validated, and the parsers for its
// option values (pure functions, unit-tested).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "vmm/base/error.hpp"

namespace kestrel {

struct SerialTarget {
    enum class Kind { Stdio, File, None } kind = Kind::Stdio;
    std::string path;
};

inline constexpr std::string_view kDefaultCmdline = "console=ttyS0 reboot=k panic=-1";
inline constexpr uint32_t kMaxVcpus = 254;  // xAPIC IDs; 255 is broadcast (SDM vol. 3A §10.6.2.1)

struct VmConfig {
    std::string kernel;
    std::string initrd;
    std::string cmdline{kDefaultCmdline};
    uint32_t cpus = 1;
    uint64_t memory_bytes = 256ull << 20;
    SerialTarget serial;
    std::string log_level = "warn";
};

// "512" (MiB), "512M", "65536K", "2G"; at least 16 MiB, at most 1 TiB, whole MiB.
Result<uint64_t> parse_memory_size(std::string_view s);
// "stdio", "none", "file:PATH".
Result<SerialTarget> parse_serial(std::string_view s);

}  // namespace kestrel
