#include "vmm/metrics/fc_metrics.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <chrono>
#include <nlohmann/json.hpp>

namespace kestrel::metrics {

namespace {

using ojson = nlohmann::ordered_json;

struct KeyMap {
    std::string_view group, name, fc;
};
// Firecracker's names (src/vmm/src/devices/virtio/{block/virtio,net,vsock,rng}/metrics.rs,
// devices/legacy/serial.rs) for the kestrel counters that count the same thing.
constexpr KeyMap kFirecrackerKeys[] = {
    {"blk", "reads", "read_count"},
    {"blk", "writes", "write_count"},
    {"blk", "flushes", "flush_count"},
    {"blk", "read_bytes", "read_bytes"},
    {"blk", "write_bytes", "write_bytes"},
    {"blk", "io_errors", "execute_fails"},
    {"blk", "malformed_chains", "invalid_reqs_count"},
    {"net", "rx_bytes", "rx_bytes_count"},
    {"net", "rx_packets", "rx_packets_count"},
    {"net", "tx_bytes", "tx_bytes_count"},
    {"net", "tx_packets", "tx_packets_count"},
    {"net", "rx_tap_errors", "tap_read_fails"},
    {"net", "tx_tap_errors", "tap_write_fails"},
    {"net", "tx_malformed_chains", "tx_malformed_frames"},
    {"net", "rx_stalls", "no_rx_avail_buffer"},
    {"vsock", "bytes_to_guest", "rx_bytes_count"},
    {"vsock", "bytes_to_host", "tx_bytes_count"},
    {"vsock", "packets_to_guest", "rx_packets_count"},
    {"vsock", "packets_from_guest", "tx_packets_count"},
    {"vsock", "connections_closed", "conns_removed"},
    {"rng", "requests", "entropy_event_count"},
    {"rng", "bytes", "entropy_bytes"},
    {"rng", "entropy_errors", "host_rng_fails"},
    {"serial", "written_bytes", "write_count"},
    {"serial", "dropped_bytes", "missed_write_count"},
};

std::string group_of(const Sample& s) {
    if (s.group == "blk") return s.device.empty() ? "block" : "block_" + s.device;
    if (s.group == "net") return s.device.empty() ? "net" : "net_" + s.device;
    if (s.group == "rng") return "entropy";
    if (s.group == "serial") return "uart";
    if (s.group == "process") return "vmm";
    return s.group;  // vsock, vcpu
}

// The sum group Firecracker adds next to per-device ones ("block", "net"); "" for none.
std::string aggregate_of(const Sample& s) {
    if (s.device.empty()) return "";
    if (s.group == "blk") return "block";
    if (s.group == "net") return "net";
    return "";
}

std::string key_of(const Sample& s) {
    if (s.type == Type::Histogram) return (s.label_value.empty() ? s.name : s.label_value) + "_agg";
    if (s.group == "vcpu" && s.name == "exits") return "exit_" + s.label_value;
    std::string_view fc = firecracker_key(s.group, s.name);
    std::string k = fc.empty() ? s.name : std::string(fc);
    if (!s.label_value.empty() && fc.empty()) k += "_" + s.label_value;
    if (s.unit == Unit::Nanoseconds && k.ends_with("_seconds")) k = k.substr(0, k.size() - 8) + "_us";
    return k;
}

void add_to(ojson& slot, uint64_t v) {
    slot = slot.is_number() ? slot.get<uint64_t>() + v : v;
}

// Adds `v` at key (an array element when queue >= 0).
void add_value(ojson& group, const std::string& key, int queue, uint64_t v) {
    ojson& slot = group[key];
    if (queue < 0) return add_to(slot, v);
    if (!slot.is_array()) slot = ojson::array();
    while (slot.size() <= static_cast<size_t>(queue)) slot.push_back(0);
    add_to(slot[static_cast<size_t>(queue)], v);
}

}  // namespace

std::string_view firecracker_key(std::string_view group, std::string_view name) {
    for (const auto& k : kFirecrackerKeys)
        if (k.group == group && k.name == name) return k.fc;
    return {};
}

uint64_t FcMetricsRenderer::delta(const std::string& key, uint64_t now) {
    uint64_t& last = last_[key];
    // A counter below its last value (a device replaced): count from zero again.
    uint64_t d = now >= last ? now - last : now;
    last = now;
    return d;
}

std::string FcMetricsRenderer::render_line(const Snapshot& snap, int64_t utc_timestamp_ms) {
    ojson j;
    j["utc_timestamp_ms"] = utc_timestamp_ms;
    for (const Sample& s : snap) {
        const std::string group = group_of(s), agg = aggregate_of(s), key = key_of(s);
        const std::string id = s.group + "/" + s.device + "/" + s.name + "/" + s.label_value + "/" + std::to_string(s.queue);
        ojson& g = j[group];
        if (!g.is_object()) g = ojson::object();
        switch (s.type) {
        case Type::Gauge:
            if (s.queue < 0) g[key] = s.gauge;
            else add_value(g, key, s.queue, static_cast<uint64_t>(std::max<int64_t>(s.gauge, 0)));
            break;
        case Type::Counter: {
            const uint64_t now = s.unit == Unit::Nanoseconds ? s.value / 1000 : s.value;
            const uint64_t d = delta(id, now);
            add_value(g, key, s.queue, d);
            if (!agg.empty()) add_value(j[agg], key, s.queue, d);
            break;
        }
        case Type::Histogram: {
            ojson h = ojson::object();
            h["sum_us"] = delta(id + "/sum", s.hist.sum_ns / 1000);
            uint64_t cumulative = 0, count = 0;
            ojson le = ojson::object();
            for (int i = 0; i <= LatencyHistogram::kFinite; ++i) {
                cumulative += s.hist.counts[static_cast<size_t>(i)];
                const uint64_t d = delta(id + "/" + std::to_string(i), cumulative);
                le[i < LatencyHistogram::kFinite ? std::to_string(LatencyHistogram::bound_us(i)) : "+Inf"] = d;
                count = d;
            }
            h["count"] = count;
            h["le_us"] = le;
            auto merge = [&](ojson& into) {
                if (!into.is_object()) {
                    into = h;
                    return;
                }
                add_to(into["sum_us"], h["sum_us"].get<uint64_t>());
                add_to(into["count"], h["count"].get<uint64_t>());
                for (auto& [k, v] : h["le_us"].items()) add_to(into["le_us"][k], v.get<uint64_t>());
            };
            merge(g[key]);
            if (!agg.empty()) merge(j[agg][key]);
            break;
        }
        }
    }
    j["logger"] = {{"missed_metrics_count", delta("logger/missed", missed)}};
    return j.dump();
}

Result<std::unique_ptr<MetricsFile>> MetricsFile::open(const std::string& path) {
    if (path.empty()) return bad_request("metrics_path is empty");
    constexpr int kFlags = O_APPEND | O_CREAT | O_NONBLOCK | O_CLOEXEC;
    UniqueFd fd(::open(path.c_str(), O_WRONLY | kFlags, 0600));
    // A FIFO nobody reads yet: Firecracker opens it read-write, which needs no reader.
    if (!fd && errno == ENXIO) fd = UniqueFd(::open(path.c_str(), O_RDWR | kFlags, 0600));
    if (!fd) return fail_errno("metrics_path '{}': cannot open for writing", path);
    return std::unique_ptr<MetricsFile>(new MetricsFile(path, std::move(fd)));
}

Result<void> MetricsFile::flush(const Snapshot& s) {
    const auto now = std::chrono::system_clock::now().time_since_epoch();
    std::string line =
        renderer_.render_line(s, std::chrono::duration_cast<std::chrono::milliseconds>(now).count()) + "\n";
    size_t done = 0;
    while (done < line.size()) {
        ssize_t n = ::write(fd_.get(), line.data() + done, line.size() - done);
        if (n > 0) {
            done += static_cast<size_t>(n);
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        ++renderer_.missed;
        if (n < 0 && errno != EAGAIN) return fail_errno("metrics_path '{}': write", path_);
        return fail("metrics_path '{}': the reader is not keeping up; {} of {} bytes of this line written",
                    path_, done, line.size());
    }
    return {};
}

}  // namespace kestrel::metrics
