// Task stats as containerd reads them: StatsResponse.stats is an Any holding
// io.containerd.cgroups.v2.Metrics (github.com/containerd/cgroups v2/stats/metrics.proto),
// which `ctr task metrics` and the CRI plugin decode. The message is not generated here, so
// the few fields the agent reports are encoded by hand (protobuf encoding: varint fields in
// nested messages), field numbers from that .proto:
//   Metrics { PidsStat pids = 1; CPUStat cpu = 2; MemoryStat memory = 4; }
//   PidsStat { uint64 current = 1; uint64 limit = 2; }
//   CPUStat { uint64 usage_usec = 1; user_usec = 2; system_usec = 3; nr_periods = 4;
//             nr_throttled = 5; throttled_usec = 6; }   (the names of cgroup v2's cpu.stat)
//   MemoryStat { uint64 anon = 1; ... thp_collapse_alloc = 31; (memory.stat's names, in
//                the order of metrics.proto) usage = 32; uint64 usage_limit = 33; }
// The CRI plugin's working set is memory.usage - memory.inactive_file, its RSS
// memory.anon; both need the memory.stat figures.
#pragma once

#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace kestrel::shim {

inline constexpr std::string_view kCgroup2MetricsType = "io.containerd.cgroups.v2.Metrics";

// From the agent's `stats` answer (PROTOCOL.md): cpu_usage_usec, memory_current,
// memory_max, pids_current, and the cpu_stat / memory_stat objects, each optional; fields
// that are absent, unknown or not unsigned integers are left out.
std::string encode_cgroup2_metrics(const nlohmann::json& agent_stats);

}  // namespace kestrel::shim
