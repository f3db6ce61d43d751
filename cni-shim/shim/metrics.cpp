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

// Field numbers 1.. of CPUStat and MemoryStat, by cgroup v2 file key (metrics.proto order).
constexpr const char* kCpuStat[] = {"usage_usec", "user_usec", "system_usec", "nr_periods", "nr_throttled",
                                    "throttled_usec"};
constexpr const char* kMemoryStat[] = {
    "anon", "file", "kernel_stack", "slab", "sock", "shmem", "file_mapped", "file_dirty", "file_writeback",
    "anon_thp", "inactive_anon", "active_anon", "inactive_file", "active_file", "unevictable",
    "slab_reclaimable", "slab_unreclaimable", "pgfault", "pgmajfault", "workingset_refault",
    "workingset_activate", "workingset_nodereclaim", "pgrefill", "pgscan", "pgsteal", "pgactivate",
    "pgdeactivate", "pglazyfree", "pglazyfreed", "thp_fault_alloc", "thp_collapse_alloc"};

template <std::size_t N>
void stat_fields(std::string& out, const nlohmann::json& s, const char* key, const char* const (&names)[N]) {
    auto it = s.find(key);
    if (it == s.end() || !it->is_object()) return;
    for (std::size_t i = 0; i < N; ++i) uint_field(out, static_cast<std::uint32_t>(i + 1), *it, names[i]);
}
}  // namespace

std::string encode_cgroup2_metrics(const nlohmann::json& s) {
    std::string pids, cpu, memory, out;
    if (!s.is_object()) return out;
    uint_field(pids, 1, s, "pids_current");
    if (auto it = s.find("cpu_stat"); it != s.end() && it->is_object()) stat_fields(cpu, s, "cpu_stat", kCpuStat);
    else uint_field(cpu, 1, s, "cpu_usage_usec");  // an agent without cpu_stat
    stat_fields(memory, s, "memory_stat", kMemoryStat);
    uint_field(memory, 32, s, "memory_current");
    uint_field(memory, 33, s, "memory_max");
    message_field(out, 1, pids);
    message_field(out, 2, cpu);
    message_field(out, 4, memory);
    return out;
}

}  // namespace kestrel::shim
