#include "vmm/vm_config.hpp"

#include <charconv>

namespace kestrel {

Result<uint64_t> parse_memory_size(std::string_view s) {
    uint64_t n = 0;
    auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), n);
    if (ec != std::errc() || p == s.data())
        return fail("memory size '{}' is not a number (examples: 512M, 2G)", s);
    std::string_view suffix(p, static_cast<size_t>(s.data() + s.size() - p));
    unsigned shift;
    if (suffix.empty() || suffix == "M" || suffix == "m" || suffix == "MiB") shift = 20;
    else if (suffix == "K" || suffix == "k" || suffix == "KiB") shift = 10;
    else if (suffix == "G" || suffix == "g" || suffix == "GiB") shift = 30;
    else return fail("memory size '{}' has an unknown suffix '{}' (use K, M or G)", s, suffix);
    if (n > (uint64_t{1} << 40) >> shift) return fail("memory size '{}' is above 1 TiB", s);
    uint64_t bytes = n << shift;
    if (bytes % (1u << 20)) return fail("memory size '{}' is not a whole number of MiB", s);
    if (bytes < (16u << 20)) return fail("memory size '{}' is below the 16 MiB minimum", s);
    return bytes;
}

Result<SerialTarget> parse_serial(std::string_view s) {
    if (s == "stdio") return SerialTarget{SerialTarget::Kind::Stdio, {}};
    if (s == "none") return SerialTarget{SerialTarget::Kind::None, {}};
    if (s.starts_with("file:") && s.size() > 5)
        return SerialTarget{SerialTarget::Kind::File, std::string(s.substr(5))};
    return fail("serial target '{}' is not one of stdio, none, file:PATH", s);
}

}  // namespace kestrel
