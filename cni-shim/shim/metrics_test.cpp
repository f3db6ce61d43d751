#include "cni-shim/shim/metrics.hpp"

#include <doctest/doctest.h>

using namespace kestrel::shim;

TEST_CASE("encode_cgroup2_metrics: the agent's stats as cgroups v2 Metrics bytes") {
    auto b = encode_cgroup2_metrics({{"pids_current", 2}, {"cpu_usage_usec", 300}, {"memory_current", 1048576}, {"memory_max", 5}});
    // pids=1 {current=1: 2}; cpu=2 {usage_usec=1: 300 = ac 02}; memory=4 {usage=32 (tag 80 02):
    // 1048576 = 80 80 40, usage_limit=33 (tag 88 02): 5}
    std::string want = std::string("\x0a\x02\x08\x02", 4) + std::string("\x12\x03\x08\xac\x02", 5) +
                       std::string("\x22\x08\x80\x02\x80\x80\x40\x88\x02\x05", 10);
    CHECK(b == want);
    // memory_max left out (the agent omits "max"), hostile values dropped
    auto partial = encode_cgroup2_metrics({{"pids_current", -1}, {"memory_current", "a lot"}, {"cpu_usage_usec", 1}});
    CHECK(partial == std::string("\x12\x02\x08\x01", 4));
    CHECK(encode_cgroup2_metrics(nlohmann::json::object()).empty());
    CHECK(encode_cgroup2_metrics(nlohmann::json::array()).empty());
}
