#include "vmm/snapshot_client.hpp"

#include <sys/socket.h>

#include <httplib.h>
#include <nlohmann/json.hpp>

#include "vmm/base/error.hpp"
#include "vmm/base/log.hpp"

namespace kestrel {

namespace {

using json = nlohmann::json;

// One request on the API socket; the fault_message of a refusal, or a transport error.
Result<json> call(httplib::Client& c, const char* method, const std::string& path, const json& body) {
    const std::string text = body.is_null() ? "" : body.dump();
    httplib::Result r = std::string_view(method) == "GET" ? c.Get(path.c_str())
                        : std::string_view(method) == "PATCH"
                            ? c.Patch(path.c_str(), text, "application/json")
                            : c.Put(path.c_str(), text, "application/json");
    if (!r) return fail("{} {}: {}", method, path, httplib::to_string(r.error()));
    if (r->status == 200) {
        auto j = json::parse(r->body, nullptr, false);
        if (j.is_discarded()) return fail("{} {}: the answer is not JSON", method, path);
        return j;
    }
    if (r->status == 204) return json();
    auto j = json::parse(r->body, nullptr, false);
    std::string why = !j.is_discarded() && j.contains("fault_message") && j["fault_message"].is_string()
                          ? j["fault_message"].get<std::string>()
                          : r->body;
    return fail("{} {}: {} {}", method, path, r->status, why);
}

}  // namespace

int run_snapshot_client(const SnapshotClientOptions& o) {
    httplib::Client c(o.api_socket);
    c.set_address_family(AF_UNIX);
    c.set_read_timeout(600, 0);  // writing a large guest's memory takes a while
    auto info = call(c, "GET", "/", nullptr);
    if (!info) {
        log::error("snapshot: no kestrel answers on '{}': {}", o.api_socket, info.error().what());
        return 1;
    }
    const bool was_paused = info->value("state", "") == "Paused";
    if (!was_paused) {
        if (auto r = call(c, "PATCH", "/vm", json{{"state", "Paused"}}); !r) {
            log::error("snapshot: {}", r.error().what());
            return 1;
        }
    }
    auto made = call(c, "PUT", "/snapshot/create",
                     json{{"snapshot_path", o.state_path}, {"mem_file_path", o.mem_path},
                          {"snapshot_type", o.diff ? "Diff" : "Full"}});
    if (!was_paused && !o.keep_paused) {
        if (auto r = call(c, "PATCH", "/vm", json{{"state", "Resumed"}}); !r)
            log::error("snapshot: resuming the VM: {}", r.error().what());
    }
    if (!made) {
        log::error("snapshot: {}", made.error().what());
        return 1;
    }
    log::info("snapshot: state in '{}', memory in '{}'{}", o.state_path, o.mem_path,
              was_paused || o.keep_paused ? "; the VM is paused" : "");
    return 0;
}

int run_migrate_client(const MigrateClientOptions& o) {
    httplib::Client c(o.api_socket);
    c.set_address_family(AF_UNIX);
    json body = {{"destination", o.destination}, {"downtime_ms", o.downtime_ms}};
    if (o.max_bandwidth) body["max_bandwidth"] = o.max_bandwidth;
    if (o.auto_converge) body["auto_converge"] = true;
    if (auto r = call(c, "PUT", "/migrate", body); !r) {
        log::error("migrate: {}", r.error().what());
        return 1;
    }
    const bool tty = ::isatty(STDERR_FILENO);
    for (int tick = 0;; ++tick) {
        ::usleep(500'000);
        auto p = call(c, "GET", "/migrate", nullptr);
        if (!p) {
            // A completed source ends its process, and its API with it.
            log::error("migrate: {}", p.error().what());
            return 1;
        }
        const std::string phase = p->value("phase", "?");
        const std::string line = fmt::format(
            "migrate: {} round {}, {} MiB sent at {} MiB/s, {} dirty pages, expected downtime {} ms, "
            "vCPUs throttled {}%, ETA {:.1f} s, {:.1f} s so far",
            phase, p->value("round", 0), p->value("bytes_sent", uint64_t{0}) >> 20,
            p->value("bandwidth_bytes_s", uint64_t{0}) >> 20, p->value("dirty_pages", uint64_t{0}),
            p->value("expected_downtime_ms", uint64_t{0}), p->value("cpu_throttle_pct", 0),
            static_cast<double>(p->value("eta_ms", uint64_t{0})) / 1000,
            static_cast<double>(p->value("total_ms", uint64_t{0})) / 1000);
        if (phase == "completed") {
            if (tty) std::fputs("\n", stderr);
            log::info("migrate: completed in {} ms, downtime {} ms; the VM runs at {}", p->value("total_ms", uint64_t{0}),
                      p->value("downtime_ms", uint64_t{0}), o.destination);
            return 0;
        }
        if (phase == "failed" || phase == "cancelled") {
            if (tty) std::fputs("\n", stderr);
            log::error("migrate: {}: {}; the VM keeps running in the source", phase, p->value("error", std::string()));
            return 1;
        }
        if (tty) std::fprintf(stderr, "\r%s\x1b[K", line.c_str());
        else if (tick % 2 == 1) log::info("{}", line);
    }
}

}  // namespace kestrel
