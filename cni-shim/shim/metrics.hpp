// Task stats as containerd reads them: StatsResponse.stats is an Any holding
// io.containerd.cgroups.v2.Metrics (github.com/containerd/cgroups v2/stats/metrics.proto),
// which `ctr task metrics` and the CRI plugin decode. The message is not generated here, so
// the few fields the agent reports are encoded by hand (protobuf encoding: varint fields in
// nested messages), field numbers from that .proto:
//   Metrics { PidsStat pids = 1; CPUStat cpu = 2; MemoryStat memory = 4; }
//   PidsStat { uint64 current = 1; uint64 limit = 2; }
//   CPUStat { uint64 usage_usec = 1; }
//   MemoryStat { uint64 usage = 32; uint64 usage_limit = 33; }
#pragma once

#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace kestrel::shim {

inline constexpr std::string_view kCgroup2MetricsType = "io.containerd.cgroups.v2.Metrics";

// From the agent's `stats` answer (PROTOCOL.md): cpu_usage_usec, memory_current,
// memory_max, pids_current, each optional; fields that are absent or not unsigned
// integers are left out.
std::string encode_cgroup2_metrics(const nlohmann::json& agent_stats);

}  // namespace kestrel::shim
