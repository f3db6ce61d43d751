#include "vmm/metrics/prometheus.hpp"

#include <fmt/format.h>

#include <cmath>
#include <map>

namespace kestrel::metrics {

namespace {

bool name_char(char c, bool first, bool allow_colon) {
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_') return true;
    if (c == ':') return allow_colon;
    return !first && c >= '0' && c <= '9';
}

std::string escape_help(std::string_view v) {
    std::string out;
    for (char c : v) {
        if (c == '\\') out += "\\\\";
        else if (c == '\n') out += "\\n";
        else out += c;
    }
    return out;
}

const char* type_name(Type t) {
    switch (t) {
    case Type::Counter: return "counter";
    case Type::Gauge: return "gauge";
    case Type::Histogram: return "histogram";
    }
    return "untyped";
}

// `{k="v",...}` with the sample's labels, then `extra` (le) if given; "" without labels.
std::string labels(const Sample& s, std::string_view extra_key = {}, std::string_view extra_value = {}) {
    std::string out;
    auto add = [&](std::string_view k, std::string_view v) {
        out += out.empty() ? "{" : ",";
        out += prometheus_name(k, false);
        out += "=\"";
        out += escape_label_value(v);
        out += '"';
    };
    if (!s.device_label.empty()) add(s.device_label, s.device);
    if (s.queue >= 0) add("queue", std::to_string(s.queue));
    if (!s.label_key.empty()) add(s.label_key, s.label_value);
    if (!extra_key.empty()) add(extra_key, extra_value);
    if (!out.empty()) out += '}';
    return out;
}

void render_sample(std::string& out, const std::string& family, const Sample& s) {
    switch (s.type) {
    case Type::Counter: {
        std::string v = s.unit == Unit::Nanoseconds ? format_prometheus_double(static_cast<double>(s.value) / 1e9)
                                                    : std::to_string(s.value);
        out += fmt::format("{}_total{} {}\n", family, labels(s), v);
        return;
    }
    case Type::Gauge:
        out += fmt::format("{}{} {}\n", family, labels(s), s.gauge);
        return;
    case Type::Histogram: {
        uint64_t cumulative = 0;
        for (int i = 0; i < LatencyHistogram::kFinite; ++i) {
            cumulative += s.hist.counts[static_cast<size_t>(i)];
            const double le = static_cast<double>(LatencyHistogram::bound_us(i)) / 1e6;
            out += fmt::format("{}_bucket{} {}\n", family, labels(s, "le", format_prometheus_double(le)), cumulative);
        }
        cumulative += s.hist.counts[LatencyHistogram::kFinite];
        out += fmt::format("{}_bucket{} {}\n", family, labels(s, "le", "+Inf"), cumulative);
        out += fmt::format("{}_sum{} {}\n", family, labels(s),
                           format_prometheus_double(static_cast<double>(s.hist.sum_ns) / 1e9));
        out += fmt::format("{}_count{} {}\n", family, labels(s), cumulative);
        return;
    }
    }
}

}  // namespace

std::string prometheus_name(std::string_view name, bool allow_colon) {
    std::string out;
    for (size_t i = 0; i < name.size(); ++i)
        out += name_char(name[i], i == 0, allow_colon) ? name[i] : '_';
    if (out.empty()) out = "_";
    return out;
}

std::string escape_label_value(std::string_view v) {
    std::string out;
    for (char c : v) {
        if (c == '\\') out += "\\\\";
        else if (c == '"') out += "\\\"";
        else if (c == '\n') out += "\\n";
        else out += c;
    }
    return out;
}

// Go's ParseFloat reads both fixed and exponent forms; the shortest exact one is used.
std::string format_prometheus_double(double v) {
    if (std::isnan(v)) return "NaN";
    if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
    return fmt::format("{}", v);
}

std::string render_prometheus(const Snapshot& s) {
    // Families in order of first appearance; each family's samples in their own order.
    std::vector<std::string> order;
    std::map<std::string, std::vector<const Sample*>> by_family;
    for (const Sample& x : s) {
        std::string f = prometheus_name(x.family);
        auto [it, fresh] = by_family.try_emplace(f);
        if (fresh) order.push_back(f);
        // One TYPE per family: a sample whose type differs from the family's first is a
        // programming error, and is left out rather than make the whole page unparseable.
        if (!it->second.empty() && it->second.front()->type != x.type) continue;
        it->second.push_back(&x);
    }
    std::string out;
    for (const auto& f : order) {
        const auto& samples = by_family[f];
        const Sample& first = *samples.front();
        std::string shown = first.type == Type::Counter ? f + "_total" : f;
        out += fmt::format("# HELP {} {}\n# TYPE {} {}\n", shown, escape_help(first.help), shown, type_name(first.type));
        for (const Sample* x : samples) render_sample(out, f, *x);
    }
    return out;
}

}  // namespace kestrel::metrics
