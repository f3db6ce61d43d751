#include "cni-shim/shim/metrics.hpp"

#include <cstdint>

namespace kestrel::shim {

namespace {
void varint(std::string& out, std::uint64_t v) {
    while (v >= 0x80) {
        out.push_back(static_cast<char>((v & 0x7f) | 0x80));
        v >>= 7;
    }
    out.push_back(static_cast<char>(v));
}

void uint_field(std::string& out, std::uint32_t field, const nlohmann::json& j, const char* key) {
    auto it = j.find(key);
    if (it == j.end() || !it->is_number_integer() || (!it->is_number_unsigned() && it->get<std::int64_t>() < 0)) return;
    varint(out, std::uint64_t{field} << 3);  // wire type 0
    varint(out, it->get<std::uint64_t>());
}

void message_field(std::string& out, std::uint32_t field, const std::string& body) {
    if (body.empty()) return;
    varint(out, (std::uint64_t{field} << 3) | 2);  // wire type 2: length-delimited
    varint(out, body.size());
    out += body;
}
}  // namespace

std::string encode_cgroup2_metrics(const nlohmann::json& s) {
    std::string pids, cpu, memory, out;
    if (!s.is_object()) return out;
    uint_field(pids, 1, s, "pids_current");
    uint_field(cpu, 1, s, "cpu_usage_usec");
    uint_field(memory, 32, s, "memory_current");
    uint_field(memory, 33, s, "memory_max");
    message_field(out, 1, pids);
    message_field(out, 2, cpu);
    message_field(out, 4, memory);
    return out;
}

}  // namespace kestrel::shim
