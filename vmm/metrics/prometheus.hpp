// Prometheus text exposition format 0.0.4 (what GET /metrics answers): one `# HELP` and one
// `# TYPE` line per family, then its samples; counters end in `_total`, histograms expand to
// cumulative `_bucket{le="..."}` lines ending with le="+Inf", then `_sum` and `_count`.
// Names are forced into the format's charset ([a-zA-Z_:][a-zA-Z0-9_:]*, labels without ':');
// label values and help text are escaped (\\, \", \n).
// https://prometheus.io/docs/instrumenting/exposition_formats/ (text format 0.0.4)
#pragma once

#include <string>
#include <string_view>

#include "vmm/metrics/snapshot.hpp"

namespace kestrel::metrics {

inline constexpr std::string_view kPrometheusContentType = "text/plain; version=0.0.4";

// Samples of one family are gathered under its first appearance, whatever their order.
std::string render_prometheus(const Snapshot& s);

// The pieces, for tests.
std::string prometheus_name(std::string_view name, bool allow_colon = true);
std::string escape_label_value(std::string_view v);
std::string format_prometheus_double(double v);

}  // namespace kestrel::metrics
