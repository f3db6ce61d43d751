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

TEST_CASE("encode_cgroup2_metrics: cpu.stat and memory.stat by name, in metrics.proto's field numbers") {
    nlohmann::json agent = {{"cpu_usage_usec", 300},
                            {"cpu_stat", {{"usage_usec", 300}, {"user_usec", 200}, {"system_usec", 100}, {"core_sched.force_idle_usec", 7}}},
                            {"memory_stat", {{"anon", 4096}, {"inactive_file", 8192}, {"file", "x"}, {"bogus", 1}}},
                            {"memory_current", 1048576}};
    // cpu=2 {usage_usec=1: 300 (ac 02), user_usec=2: 200 (c8 01), system_usec=3: 100};
    // memory=4 {anon=1: 4096 (80 20), inactive_file=13 (tag 0x68): 8192 (80 40),
    // usage=32: 1048576}; unknown names and non-numbers dropped.
    std::string want = std::string("\x12\x08\x08\xac\x02\x10\xc8\x01\x18\x64", 10) +
                       std::string("\x22\x0b\x08\x80\x20\x68\x80\x40\x80\x02\x80\x80\x40", 13);
    CHECK(encode_cgroup2_metrics(agent) == want);
    // A cpu_stat that is not an object falls back to cpu_usage_usec.
    CHECK(encode_cgroup2_metrics({{"cpu_stat", 5}, {"cpu_usage_usec", 1}, {"memory_stat", "x"}}) == std::string("\x12\x02\x08\x01", 4));
}
