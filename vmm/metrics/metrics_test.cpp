#include <doctest/doctest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>
#include <sstream>

#include "devices/virtio/blk/blk_metrics.hpp"
#include "devices/virtio/net/net_metrics.hpp"
#include "devices/virtio/rng/rng_metrics.hpp"
#include "devices/virtio/vsock/vsock_metrics.hpp"
#include "vmm/metrics/collect.hpp"
#include "vmm/metrics/fc_metrics.hpp"
#include "vmm/metrics/prometheus.hpp"

using namespace kestrel;
using namespace kestrel::metrics;

namespace {

Sample counter(std::string group, std::string name, uint64_t v, std::string dev_label = "", std::string dev = "",
               int queue = -1) {
    Sample s;
    s.family = "kestrel_" + group + "_" + name;
    s.group = std::move(group);
    s.name = std::move(name);
    s.help = "help of " + s.name;
    s.value = v;
    s.device_label = std::move(dev_label);
    s.device = std::move(dev);
    s.queue = queue;
    return s;
}

Sample gauge(std::string group, std::string name, int64_t v, std::string dev_label = "", std::string dev = "",
             int queue = -1) {
    Sample s = counter(std::move(group), std::move(name), 0, std::move(dev_label), std::move(dev), queue);
    s.type = Type::Gauge;
    s.gauge = v;
    return s;
}

Sample latency(std::string dev, std::string op, std::initializer_list<uint64_t> ns) {
    LatencyHistogram h;
    for (uint64_t v : ns) h.record(v);
    Sample s = counter("blk", "request_duration_seconds", 0, "drive", std::move(dev));
    s.type = Type::Histogram;
    s.label_key = "op";
    s.label_value = std::move(op);
    s.hist = h.snapshot();
    return s;
}

std::vector<std::string> lines_of(const std::string& text) {
    std::vector<std::string> out;
    std::istringstream in(text);
    for (std::string l; std::getline(in, l);) out.push_back(l);
    return out;
}

// Every name a metrics struct hands its visitor.
struct Names final : MetricVisitor {
    void counter(std::string_view name, uint64_t, std::string_view, int) override { names.insert(std::string(name)); }
    void histogram(std::string_view name, const LatencyHistogram::Snapshot&, std::string_view, MetricLabel label,
                   int) override {
        names.insert(std::string(name));
        labels.insert(std::string(label.value));
    }
    std::set<std::string> names, labels;
    int queues = 0;
};

}  // namespace

TEST_CASE("LatencyHistogram: log2 buckets from 4 us, rounded up to whole us, +Inf past 8.4 s") {
    CHECK(LatencyHistogram::bucket_of(0) == 0);
    CHECK(LatencyHistogram::bucket_of(4000) == 0);
    CHECK(LatencyHistogram::bucket_of(4001) == 1);  // 4.001 us is above the 4 us bound
    CHECK(LatencyHistogram::bucket_of(8000) == 1);
    CHECK(LatencyHistogram::bucket_of(8001) == 2);
    CHECK(LatencyHistogram::bucket_of(1'000'000) == 8);  // 1 ms <= 1.024 ms
    CHECK(LatencyHistogram::bound_us(LatencyHistogram::kFinite - 1) == 8'388'608);
    CHECK(LatencyHistogram::bucket_of(8'388'608'000) == LatencyHistogram::kFinite - 1);
    CHECK(LatencyHistogram::bucket_of(8'388'609'000) == LatencyHistogram::kFinite);
    LatencyHistogram h;
    h.record(3000);
    h.record(5000);
    h.record(100'000'000'000);
    auto s = h.snapshot();
    CHECK(s.count() == 3);
    CHECK(s.counts[0] == 1);
    CHECK(s.counts[1] == 1);
    CHECK(s.counts[LatencyHistogram::kFinite] == 1);
    CHECK(s.sum_ns == 100'000'008'000);
}

TEST_CASE("Prometheus: exact text for a small set") {
    Snapshot s{counter("blk", "read_bytes", 12288, "drive", "rootfs"),
               gauge("blk", "in_flight", 2, "drive", "rootfs", 0),
               counter("blk", "read_bytes", 7, "drive", "data"),
               gauge("process", "threads", 5)};
    s[3].family = "kestrel_process_threads";
    CHECK(render_prometheus(s) ==
          "# HELP kestrel_blk_read_bytes_total help of read_bytes\n"
          "# TYPE kestrel_blk_read_bytes_total counter\n"
          "kestrel_blk_read_bytes_total{drive=\"rootfs\"} 12288\n"
          "kestrel_blk_read_bytes_total{drive=\"data\"} 7\n"
          "# HELP kestrel_blk_in_flight help of in_flight\n"
          "# TYPE kestrel_blk_in_flight gauge\n"
          "kestrel_blk_in_flight{drive=\"rootfs\",queue=\"0\"} 2\n"
          "# HELP kestrel_process_threads help of threads\n"
          "# TYPE kestrel_process_threads gauge\n"
          "kestrel_process_threads 5\n");
}

TEST_CASE("Prometheus: histogram buckets are cumulative, end with +Inf = _count, _sum in seconds") {
    Snapshot s{latency("rootfs", "read", {3000, 5000, 6000, 2'000'000, 10'000'000'000})};
    auto lines = lines_of(render_prometheus(s));
    REQUIRE(lines.size() == 2 + LatencyHistogram::kFinite + 1 + 2);
    CHECK(lines[0] == "# HELP kestrel_blk_request_duration_seconds help of request_duration_seconds");
    CHECK(lines[1] == "# TYPE kestrel_blk_request_duration_seconds histogram");
    CHECK(lines[2] == "kestrel_blk_request_duration_seconds_bucket{drive=\"rootfs\",op=\"read\",le=\"4e-06\"} 1");
    CHECK(lines[3] == "kestrel_blk_request_duration_seconds_bucket{drive=\"rootfs\",op=\"read\",le=\"8e-06\"} 3");
    CHECK(lines[11] == "kestrel_blk_request_duration_seconds_bucket{drive=\"rootfs\",op=\"read\",le=\"0.002048\"} 4");
    CHECK(lines[23] == "kestrel_blk_request_duration_seconds_bucket{drive=\"rootfs\",op=\"read\",le=\"8.388608\"} 4");
    CHECK(lines[24] == "kestrel_blk_request_duration_seconds_bucket{drive=\"rootfs\",op=\"read\",le=\"+Inf\"} 5");
    CHECK(lines[25] == "kestrel_blk_request_duration_seconds_sum{drive=\"rootfs\",op=\"read\"} 10.002014");
    CHECK(lines[26] == "kestrel_blk_request_duration_seconds_count{drive=\"rootfs\",op=\"read\"} 5");
    uint64_t last = 0;
    for (size_t i = 2; i <= 24; ++i) {
        uint64_t v = std::stoull(lines[i].substr(lines[i].rfind(' ') + 1));
        CHECK(v >= last);
        last = v;
    }
}

TEST_CASE("Prometheus: names forced into the charset, label values and help escaped, one TYPE per family") {
    CHECK(prometheus_name("kestrel_blk_read_bytes") == "kestrel_blk_read_bytes");
    CHECK(prometheus_name("9bad-name.x:y") == "_bad_name_x:y");
    CHECK(prometheus_name("le:x", false) == "le_x");
    CHECK(escape_label_value("a\"b\\c\nd") == "a\\\"b\\\\c\\nd");

    Snapshot s{counter("net", "rx_bytes", 1, "iface", "eth\"0\n"), counter("blk", "reads", 2, "drive", "a\\b"),
               counter("net", "rx_bytes", 3, "iface", "eth1")};
    s[0].help = "line one\nback\\slash";
    s[0].family = "kestrel_net_rx-bytes";
    s[2].family = "kestrel_net_rx-bytes";
    Sample wrong = gauge("net", "rx_bytes", 4);  // same family, another type: left out
    wrong.family = "kestrel_net_rx-bytes";
    s.push_back(wrong);
    const std::string text = render_prometheus(s);
    CHECK(text ==
          "# HELP kestrel_net_rx_bytes_total line one\\nback\\\\slash\n"
          "# TYPE kestrel_net_rx_bytes_total counter\n"
          "kestrel_net_rx_bytes_total{iface=\"eth\\\"0\\n\"} 1\n"
          "kestrel_net_rx_bytes_total{iface=\"eth1\"} 3\n"
          "# HELP kestrel_blk_reads_total help of reads\n"
          "# TYPE kestrel_blk_reads_total counter\n"
          "kestrel_blk_reads_total{drive=\"a\\\\b\"} 2\n");
}

TEST_CASE("Prometheus: what collect() gives for the process alone is well-formed text") {
    const std::string text = render_prometheus(collect(nullptr, read_process_stats()));
    const std::regex sample(R"(^[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_][a-zA-Z0-9_]*="([^"\\\n]|\\.)*",?)*\})? [-+0-9.eInfa]+$)");
    const std::regex comment(R"(^# (HELP|TYPE) [a-zA-Z_:][a-zA-Z0-9_:]* .*$)");
    std::set<std::string> typed;
    for (const auto& l : lines_of(text)) {
        INFO(l);
        CHECK((std::regex_match(l, sample) || std::regex_match(l, comment)));
        if (l.starts_with("# TYPE ")) CHECK(typed.insert(l.substr(7, l.find(' ', 7) - 7)).second);
    }
    CHECK(typed.count("process_resident_memory_bytes") == 1);
    CHECK(typed.count("kestrel_io_uring_submissions_total") == 1);
    CHECK(text.find("\nkestrel_process_threads ") != std::string::npos);
}

TEST_CASE("Firecracker JSON lines: parseable, Firecracker's names, counters as deltas, gauges as values") {
    Snapshot s{counter("blk", "read_bytes", 4096, "drive", "rootfs"), counter("blk", "reads", 2, "drive", "rootfs"),
               counter("blk", "read_bytes", 100, "drive", "data"), counter("blk", "queue_requests", 3, "drive", "rootfs", 1),
               gauge("blk", "in_flight", 1, "drive", "rootfs", 0), latency("rootfs", "read", {3000, 5000}),
               counter("net", "tx_packets", 9, "iface", "eth0"), counter("rng", "bytes", 64),
               counter("serial", "dropped_bytes", 5), gauge("process", "threads", 4)};
    Sample exits = counter("vcpu", "exits", 10, "vcpu", "0");
    exits.label_key = "reason";
    exits.label_value = "io_in";
    s.push_back(exits);
    exits.device = "1";
    exits.value = 5;
    s.push_back(exits);
    Sample run = counter("vcpu", "run_seconds", 2'500'000, "vcpu", "0");
    run.unit = Unit::Nanoseconds;
    s.push_back(run);

    FcMetricsRenderer r;
    const std::string line = r.render_line(s, 1'700'000'000'123);
    CHECK(nlohmann::ordered_json::parse(line).begin().key() == "utc_timestamp_ms");  // first, as Firecracker's
    auto j = nlohmann::json::parse(line);
    CHECK(j["utc_timestamp_ms"] == 1'700'000'000'123);
    CHECK(j["block_rootfs"]["read_bytes"] == 4096);
    CHECK(j["block_rootfs"]["read_count"] == 2);
    CHECK(j["block_data"]["read_bytes"] == 100);
    CHECK(j["block"]["read_bytes"] == 4196);  // Firecracker's sum over drives
    CHECK(j["block_rootfs"]["queue_requests"] == nlohmann::json::array({0, 3}));
    CHECK(j["block_rootfs"]["in_flight"] == nlohmann::json::array({1}));
    CHECK(j["block_rootfs"]["read_agg"]["sum_us"] == 8);
    CHECK(j["block_rootfs"]["read_agg"]["count"] == 2);
    CHECK(j["block_rootfs"]["read_agg"]["le_us"]["4"] == 1);
    CHECK(j["block_rootfs"]["read_agg"]["le_us"]["8"] == 2);
    CHECK(j["block_rootfs"]["read_agg"]["le_us"]["+Inf"] == 2);
    CHECK(j["net_eth0"]["tx_packets_count"] == 9);
    CHECK(j["net"]["tx_packets_count"] == 9);
    CHECK(j["entropy"]["entropy_bytes"] == 64);
    CHECK(j["uart"]["missed_write_count"] == 5);
    CHECK(j["vcpu"]["exit_io_in"] == 15);  // summed over vCPUs, as Firecracker's one vcpu group
    CHECK(j["vcpu"]["run_us"] == 2500);
    CHECK(j["vmm"]["threads"] == 4);
    CHECK(j["logger"]["missed_metrics_count"] == 0);

    // Second line: the change since the first; gauges as they are.
    s[0].value = 5000;
    s[9].gauge = 6;
    auto j2 = nlohmann::json::parse(r.render_line(s, 1'700'000'060'123));
    CHECK(j2["block_rootfs"]["read_bytes"] == 904);
    CHECK(j2["block_rootfs"]["read_count"] == 0);
    CHECK(j2["block"]["read_bytes"] == 904);
    CHECK(j2["block_rootfs"]["read_agg"]["count"] == 0);
    CHECK(j2["vcpu"]["exit_io_in"] == 0);
    CHECK(j2["block_rootfs"]["in_flight"] == nlohmann::json::array({1}));
    CHECK(j2["vmm"]["threads"] == 6);
}

TEST_CASE("Firecracker JSON keys name counters the devices really have") {
    Names blk, net, vsock, rng;
    BlkMetrics b;
    b.num_queues = 2;
    b.visit(blk);
    NetMetrics{}.visit(net);
    VsockMetrics{}.visit(vsock);
    RngMetrics{}.visit(rng);
    for (const auto* name : {"reads", "writes", "flushes", "read_bytes", "write_bytes", "io_errors", "malformed_chains"}) {
        CHECK(blk.names.count(name) == 1);
        CHECK(!firecracker_key("blk", name).empty());
    }
    CHECK(blk.names.count("queue_requests") == 1);
    CHECK(blk.names.count("in_flight") == 1);
    CHECK(blk.labels == std::set<std::string>{"read", "write", "flush", "other"});
    for (const auto* name : {"rx_bytes", "rx_packets", "tx_bytes", "tx_packets", "rx_tap_errors", "tx_tap_errors",
                             "tx_malformed_chains", "rx_stalls"}) {
        CHECK(net.names.count(name) == 1);
        CHECK(!firecracker_key("net", name).empty());
    }
    for (const auto* name : {"bytes_to_guest", "bytes_to_host", "packets_to_guest", "packets_from_guest", "connections_closed"}) {
        CHECK(vsock.names.count(name) == 1);
        CHECK(!firecracker_key("vsock", name).empty());
    }
    for (const auto* name : {"requests", "bytes", "entropy_errors"}) {
        CHECK(rng.names.count(name) == 1);
        CHECK(!firecracker_key("rng", name).empty());
    }
    CHECK(firecracker_key("blk", "read_bytes") == "read_bytes");
    CHECK(firecracker_key("net", "rx_bytes") == "rx_bytes_count");
    CHECK(firecracker_key("blk", "no_such_counter").empty());
}

TEST_CASE("BlkMetrics: per-queue values only for the device's queues") {
    struct Queues final : MetricVisitor {
        void counter(std::string_view name, uint64_t v, std::string_view, int queue) override {
            if (name == "queue_requests") seen.push_back({queue, v});
        }
        std::vector<std::pair<int, uint64_t>> seen;
    } q;
    BlkMetrics b;
    b.num_queues = 3;
    BlkMetrics::inc(b.queues[2].requests, 7);
    b.visit(q);
    CHECK(q.seen == std::vector<std::pair<int, uint64_t>>{{0, 0}, {1, 0}, {2, 7}});
}

TEST_CASE("MetricsFile: one JSON line per flush, appended; a FIFO without a reader opens") {
    char dir[] = "/tmp/kestrel-metrics-XXXXXX";
    REQUIRE(::mkdtemp(dir));
    const std::string path = std::string(dir) + "/metrics.json";
    {
        auto f = MetricsFile::open(path);
        REQUIRE(f);
        Snapshot s{counter("blk", "read_bytes", 10, "drive", "rootfs")};
        REQUIRE((*f)->flush(s));
        s[0].value = 25;
        REQUIRE((*f)->flush(s));
    }
    std::ifstream in(path);
    std::vector<nlohmann::json> lines;
    for (std::string l; std::getline(in, l);) lines.push_back(nlohmann::json::parse(l));
    REQUIRE(lines.size() == 2);
    CHECK(lines[0]["block_rootfs"]["read_bytes"] == 10);
    CHECK(lines[1]["block_rootfs"]["read_bytes"] == 15);
    CHECK(lines[1]["utc_timestamp_ms"].get<int64_t>() >= lines[0]["utc_timestamp_ms"].get<int64_t>());

    const std::string fifo = std::string(dir) + "/metrics.fifo";
    REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
    CHECK(MetricsFile::open(fifo));
    CHECK(!MetricsFile::open(std::string(dir) + "/no/such/dir/m.json"));
    ::unlink(fifo.c_str());
    ::unlink(path.c_str());
    ::rmdir(dir);
}
