#include "vmm/controller.hpp"

#include <signal.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>

#include <spdlog/sinks/basic_file_sink.h>

#include "migration/migration_stream.hpp"
#include "migration/state_stream.hpp"
#include "vmm/api/api_server.hpp"
#include "vmm/base/log.hpp"
#include "vmm/file_image.hpp"
#include "vmm/metrics/collect.hpp"
#include "vmm/metrics/fc_metrics.hpp"
#include "vmm/metrics/prometheus.hpp"
#include "vmm/migration_job.hpp"
#include "vmm/rate_limits.hpp"
#include "vmm/vcpu_loop.hpp"

namespace kestrel {

using api::ApiRequest;
using api::ApiResponse;
using api::json;
using api::Op;

namespace {

// run --incoming --allow-path/--allow-tap: a source that lies cannot name host files outside
// those directories (symlinks resolved, whole path components compared) or other taps.
Result<void> check_allowed(const VmConfig& cfg, const std::vector<std::string>& dirs,
                           const std::vector<std::string>& taps) {
    namespace fs = std::filesystem;
    auto inside = [&](const std::string& what, const std::string& path) -> Result<void> {
        if (dirs.empty()) return {};
        std::error_code ec;
        const fs::path p = fs::weakly_canonical(fs::absolute(path), ec);
        if (!ec)
            for (const auto& d : dirs) {
                const fs::path dir = fs::weakly_canonical(fs::absolute(d), ec);
                if (ec) continue;
                auto rel = p.lexically_relative(dir);
                if (!rel.empty() && *rel.begin() != ".." && rel != ".") return {};
            }
        return bad_request("migration stream: {} '{}' is outside --allow-path ({}): refused", what, path,
                           fmt::join(dirs, ", "));
    };
    for (const auto& disk : cfg.disks) TRY(inside("disk", disk.path));
    if (cfg.vsock) TRY(inside("vsock socket", cfg.vsock->socket));
    if (!taps.empty())
        for (const auto& n : cfg.nets)
            if (std::find(taps.begin(), taps.end(), n.tap) == taps.end())
                return bad_request("migration stream: tap '{}' is not one of --allow-tap ({}): refused", n.tap,
                                   fmt::join(taps, ", "));
    return {};
}

constexpr const char* kVersion = KESTREL_VERSION;

void log_exit(const GuestExit& e, int code) {
    if (e.kind == ExitKind::PowerOff || e.kind == ExitKind::DebugExit || e.kind == ExitKind::Reset ||
        e.kind == ExitKind::Migrated)
        log::info("{} (exit code {})", e.message, code);
    else
        log::error("{} (exit code {})", e.message, code);
}

// PUT /logger's log_path: the log goes there (appended; a FIFO works too) instead of stderr.
Result<void> log_to_file(const std::string& path) {
    try {
        auto logger = spdlog::basic_logger_mt("kestrel-file", path, /*truncate=*/false);
        logger->set_pattern("%Y-%m-%dT%H:%M:%S.%e kestrel: %l: %v");
        logger->set_level(spdlog::get_level());
        logger->flush_on(spdlog::level::info);
        spdlog::drop("kestrel-file");
        spdlog::set_default_logger(logger);
    } catch (const spdlog::spdlog_ex& e) {
        return fail("logger: cannot write the log to '{}': {}", path, e.what());
    }
    return {};
}

template <class T, class Id>
T* find_by_id(std::vector<T>& v, const Id& id) {
    for (auto& x : v)
        if (x.id == id) return &x;
    return nullptr;
}

}  // namespace

VmConfig with_root_device(VmConfig cfg) {
    auto root = std::find_if(cfg.disks.begin(), cfg.disks.end(), [](const DiskConfig& d) { return d.is_root; });
    if (root == cfg.disks.end()) return cfg;
    std::rotate(cfg.disks.begin(), root, root + 1);
    const DiskConfig& d = cfg.disks.front();
    if (cfg.cmdline.find("root=") == std::string::npos) {
        cfg.cmdline += d.partuuid.empty() ? " root=/dev/vda" : " root=PARTUUID=" + d.partuuid;
        cfg.cmdline += d.read_only ? " ro" : " rw";
    }
    return cfg;
}

Controller::Controller(ControllerOptions o) : o_(std::move(o)), pending_(o_.config) {}

Controller::~Controller() = default;

Result<void> Controller::receive_migration() {
    auto ep = TRY(migration::parse_endpoint(o_.incoming));
    log::info("migration: waiting for the source on {}", ep.text);
    UniqueFd fd = TRY(migration::accept_one(ep));
    log::info("migration: the source connected; receiving");
    migration::StreamReader in(fd.get());
    std::unique_ptr<Vmm> vmm;
    std::vector<Vmm::RamRegion> ram;
    std::vector<uint8_t> state;
    uint64_t pages = 0;
    VmConfig cfg;
    // Where a run of `count` pages at `gpa` lies in guest RAM; refused unless wholly inside.
    auto place = [&](const migration::StreamReader::Run& run) -> Result<uint8_t*> {
        const uint64_t len = uint64_t{run.count} * migration::kPageSize;
        for (const auto& r : ram)
            if (run.gpa >= r.gpa && run.gpa - r.gpa <= r.size && len <= r.size - (run.gpa - r.gpa))
                return r.host + (run.gpa - r.gpa);
        return bad_request("migration stream: pages at {:#x} (+{:#x}) outside the guest's RAM", run.gpa, len);
    };
    auto count = [&](uint32_t n) {
        if ((pages + n) / 65536 != pages / 65536)
            log::info("migration: {} MiB received", (pages + n) * migration::kPageSize >> 20);
        pages += n;
    };
    auto receive = [&]() -> Result<void> {
        TRY(in.header());
        if (TRY(in.next()) != migration::MessageType::Config)
            return bad_request("migration stream: it does not start with CONFIG");
        auto text = TRY(in.config());
        auto j = json::parse(text, nullptr, /*allow_exceptions=*/false);
        if (j.is_discarded()) return bad_request("migration stream: CONFIG is not valid JSON");
        // The VM's shape from the source; host-side options stay this process's own.
        cfg = TRY(api::apply_full_config(pending_, j));
        for (const auto& [from, to] : o_.remap) {
            for (auto& d : cfg.disks)
                if (d.path == from) d.path = to;
            for (auto& n : cfg.nets)
                if (n.tap == from) n.tap = to;
            if (cfg.vsock && cfg.vsock->socket == from) cfg.vsock->socket = to;
        }
        TRY(check_allowed(cfg, o_.allow_paths, o_.allow_taps));
        vmm = TRY(Vmm::build_incoming(cfg));
        ram = vmm->ram_regions();
        log::info("migration: VM built from the source's configuration ({} vCPU(s), {} MiB)", cfg.cpus,
                  cfg.memory_bytes >> 20);
        TRY(migration::send_answer(fd.get(), {}));
        for (;;) {
            switch (TRY(in.next())) {
            case migration::MessageType::Config: return bad_request("migration stream: a second CONFIG");
            case migration::MessageType::Pages: {
                const auto run = TRY(in.run());
                uint8_t* at = TRY(place(run));
                TRY(in.page_data(std::span(at, uint64_t{run.count} * migration::kPageSize)));
                TRY(in.end());
                count(run.count);
                break;
            }
            case migration::MessageType::Zero: {
                const auto run = TRY(in.run());
                uint8_t* at = TRY(place(run));
                TRY(in.end());
                std::memset(at, 0, uint64_t{run.count} * migration::kPageSize);
                count(run.count);
                break;
            }
            case migration::MessageType::State:
                if (!state.empty()) return bad_request("migration stream: a second STATE");
                state = TRY(in.state());
                break;
            case migration::MessageType::Done:
                TRY(in.end());
                if (state.empty()) return bad_request("migration stream: DONE before STATE");
                // The source has let go of its disks and taps; the taps must be there
                // before the state activates the network devices.
                // Refused, this side lets go of them again before answering, so the source
                // can take them back at once (its process exiting would be too late).
                const auto t0 = std::chrono::steady_clock::now();
                auto r = vmm->acquire_backends();
                const auto t1 = std::chrono::steady_clock::now();
                if (r) r = vmm->load_migration_state(state);
                if (!r) {
                    (void)vmm->release_backends();
                    return r;
                }
                log::info("migration: disks locked and taps attached in {} us, state loaded in {} us",
                          std::chrono::duration_cast<std::chrono::microseconds>(t1 - t0).count(),
                          std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - t1).count());
                return {};
            }
        }
    };
    if (auto r = receive(); !r) {
        (void)migration::send_answer(fd.get(), r);  // the source resumes its VM and says why
        return std::unexpected(context(r.error(), "migration"));
    }
    // The answer before the start: a source that never hears OK resumes its VM, so this one
    // must not run then.
    if (auto r = migration::send_answer(fd.get(), {}); !r)
        return std::unexpected(context(r.error(), "migration: answering the source (the VM stays there)"));
    TRY(vmm->start());
    vmm->announce_network();
    seccomp::apply(seccomp::ThreadKind::Main);  // every other thread runs now
    pending_ = cfg;
    vmm_ = std::move(vmm);
    started_at_ = std::chrono::steady_clock::now();
    log::info("migration: received {} pages ({} MiB on the wire); the VM runs here", pages, in.bytes_read() >> 20);
    return {};
}

Result<void> Controller::preboot_only(const char* what) const {
    if (vmm_) return not_allowed("{} is only possible before the guest starts (InstanceStart)", what);
    return {};
}

Result<void> Controller::start_vm() {
    if (vmm_) return not_allowed("the VM has already been started");
    if (pending_.kernel.empty()) return bad_request("InstanceStart: no kernel yet (PUT /boot-source first)");
    auto vmm = TRY(Vmm::build(with_root_device(pending_)));
    TRY(vmm->start());
    seccomp::apply(seccomp::ThreadKind::Main);  // every other thread runs now
    vmm_ = std::move(vmm);
    started_at_ = std::chrono::steady_clock::now();
    return {};
}

Result<void> Controller::load_snapshot(const api::SnapshotLoadRequest& req) {
    if (vmm_) return not_allowed("snapshot/load: a VM is already running in this kestrel");
    if (!pending_.kernel.empty())
        return not_allowed("snapshot/load: only in a kestrel with nothing configured yet (a boot source is set)");
    auto image = FileImage::open(req.snapshot_path, "snapshot");
    if (!image) return bad_request("{}", image.error().what());
    auto where = [&](Error e) {
        return std::unexpected(context(std::move(e), fmt::format("snapshot '{}'", req.snapshot_path)));
    };
    auto file = migration::StateFile::parse(image->bytes());
    if (!file) return where(file.error());
    auto text = Vmm::snapshot_config(*file);
    if (!text) return where(text.error());
    auto j = json::parse(*text, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded()) return where(Error{"state: section 'config': not valid JSON", 0, ErrorKind::BadRequest});
    // The VM's shape from the snapshot; host-side options (serial, seccomp, logging) stay
    // this process's own.
    auto cfg = api::apply_full_config(pending_, j);
    if (!cfg) return where(cfg.error());
    if (req.enable_diff_snapshots) cfg->track_dirty_pages = true;
    auto vmm = Vmm::restore(*cfg, *file, req.mem_path);
    if (!vmm) return where(vmm.error());
    TRY((*vmm)->start(/*paused=*/!req.resume_vm));
    // The snapshot may be restored on another host, as QEMU's loadvm assumes too: the guest
    // tells the network where it is (delivered when its vCPUs run).
    (*vmm)->announce_network();
    seccomp::apply(seccomp::ThreadKind::Main);  // every other thread runs now
    pending_ = *cfg;
    vmm_ = std::move(*vmm);
    started_at_ = std::chrono::steady_clock::now();
    log::info("snapshot '{}' loaded; the VM is {}", req.snapshot_path, req.resume_vm ? "running" : "paused");
    return {};
}

Result<json> Controller::instance_info() const {
    const char* state = !vmm_ ? "Not started" : vmm_->state() == Vmm::State::Paused ? "Paused" : "Running";
    return json{{"id", o_.instance_id}, {"state", state}, {"vmm_version", kVersion}, {"app_name", "kestrel"}};
}

Result<json> Controller::vm_info() const {
    const auto process = metrics::read_process_stats();
    json j = TRY(instance_info());
    j["rss_bytes"] = process.rss_bytes;
    j["threads"] = process.threads;
    if (vmm_) {
        j["uptime_seconds"] =
            std::chrono::duration<double>(std::chrono::steady_clock::now() - started_at_).count();
        // Each vCPU's own report (its thread's phase and counters), not the VM's state.
        json vcpus = json::array();
        const auto phases = vmm_->vcpu_phases();
        const auto sources = vmm_->metric_sources();
        for (size_t i = 0; i < phases.size(); ++i) {
            const char* s = "Running";
            if (phases[i] == VcpuPhase::Parked) s = "Paused";
            else if (phases[i] == VcpuPhase::Ended) s = "Exited";
            else if (phases[i] == VcpuPhase::NotStarted) s = "Not started";
            json v{{"index", i}, {"state", s}, {"phase", phase_name(phases[i])}};
            if (i < sources.vcpus.size()) {
                const VcpuExitCounters& c = *sources.vcpus[i];
                uint64_t exits = 0;
                for (const auto& n : c.by_reason) exits += load_metric(n);
                v["exits"] = exits;
                v["run_seconds"] = static_cast<double>(load_metric(c.run_ns)) / 1e9;
                v["vmm_seconds"] = static_cast<double>(load_metric(c.vmm_ns)) / 1e9;
            }
            vcpus.push_back(std::move(v));
        }
        j["vcpus"] = vcpus;
    }
    return j;
}

Result<json> Controller::dispatch(const ApiRequest& r) {
    if (migration_ && migration_->running()) {
        switch (r.op) {
        case Op::PauseVm: case Op::ResumeVm: case Op::SnapshotCreate: case Op::SaveDeviceState:
        case Op::LoadDeviceState: case Op::PatchDrive: case Op::Migrate: case Op::SendCtrlAltDel:
            return not_allowed("a migration is under way (GET /migrate)");
        default: break;
        }
    }
    switch (r.op) {
    case Op::GetInstanceInfo: return instance_info();
    case Op::GetVersion: return json{{"firecracker_version", kVersion}, {"kestrel_version", kVersion}};
    case Op::GetMachineConfig: return api::machine_config_json(vmm_ ? vmm_->config() : pending_);
    case Op::GetVmConfig: {
        if (!vmm_) return api::full_config_json(pending_);
        // The running configuration (drive swaps, limiters) with boot_args as configured, as
        // Firecracker answers: the root= and ro/rw InstanceStart added (with_root_device) are
        // kestrel's, and this answer must equal the one before the start.
        VmConfig running = vmm_->config();
        running.cmdline = pending_.cmdline;
        return api::full_config_json(running);
    }
    case Op::GetVmInfo: return vm_info();
    case Op::GetRamDigest:
        if (!vmm_) return not_allowed("the guest has not started");
        return json{{"sha256", TRY(vmm_->ram_digest())}};
    case Op::GetMetrics: break;  // handle() answers it: text, not JSON

    case Op::PutBootSource:
        TRY(preboot_only("PUT /boot-source"));
        TRY(api::apply_boot_source(pending_, std::get<json>(r.payload)));
        return json();
    case Op::PutMachineConfig:
    case Op::PatchMachineConfig:
        TRY(preboot_only("changing the machine configuration"));
        TRY(api::apply_machine_config(pending_, std::get<json>(r.payload), r.op == Op::PatchMachineConfig));
        return json();
    case Op::PutDrive: {
        TRY(preboot_only("PUT /drives"));
        const auto& d = std::get<DiskConfig>(r.payload);
        if (d.is_root)
            for (const auto& other : pending_.disks)
                if (other.is_root && other.id != d.id)
                    return bad_request("drive {}: drive '{}' is already the root device", d.id, other.id);
        if (auto* existing = find_by_id(pending_.disks, d.id)) *existing = d;
        else pending_.disks.push_back(d);
        return json();
    }
    case Op::PatchDrive: {
        const auto& p = std::get<api::DrivePatch>(r.payload);
        if (vmm_) {
            if (p.path) TRY(vmm_->replace_drive_image(p.id, *p.path));  // first: the likelier to fail
            if (p.rate_limiter) TRY(vmm_->update_drive_rate_limiter(p.id, *p.rate_limiter));
            return json();
        }
        auto* d = find_by_id(pending_.disks, p.id);
        if (!d) return bad_request("drive '{}' does not exist (PUT /drives/{} first)", p.id, p.id);
        if (p.path) d->path = *p.path;
        if (p.rate_limiter) d->rate_limiter = patched(d->rate_limiter, *p.rate_limiter);
        return json();
    }
    case Op::PutNetwork: {
        TRY(preboot_only("PUT /network-interfaces"));
        const auto& n = std::get<NetConfig>(r.payload);
        for (const auto& other : pending_.nets) {
            if (other.id == n.id) continue;
            if (other.tap == n.tap) return bad_request("network-interface {}: tap '{}' is already used by '{}'", n.id, n.tap, other.id);
            if (n.mac && other.mac == n.mac) return bad_request("network-interface {}: guest_mac is already used by '{}'", n.id, other.id);
        }
        if (auto* existing = find_by_id(pending_.nets, n.id)) *existing = n;
        else pending_.nets.push_back(n);
        return json();
    }
    case Op::PatchNetwork: {
        const auto& p = std::get<api::NetPatch>(r.payload);
        if (vmm_) {
            TRY(vmm_->update_net_rate_limiters(p.id, p.rx, p.tx));
            return json();
        }
        auto* n = find_by_id(pending_.nets, p.id);
        if (!n) return bad_request("network-interface '{}' does not exist (PUT it first)", p.id);
        if (p.rx) n->rx_rate_limiter = patched(n->rx_rate_limiter, *p.rx);
        if (p.tx) n->tx_rate_limiter = patched(n->tx_rate_limiter, *p.tx);
        return json();
    }
    case Op::PutVsock:
        TRY(preboot_only("PUT /vsock"));
        pending_.vsock = std::get<VsockConfig>(r.payload);
        return json();
    case Op::PutEntropy:
        TRY(preboot_only("PUT /entropy"));
        pending_.rng = true;
        pending_.rng_rate_limiter = std::get<std::optional<RateLimiterConfig>>(r.payload);
        return json();
    case Op::PutBalloon:
        TRY(preboot_only("PUT /balloon"));
        pending_.balloon = std::get<BalloonConfig>(r.payload);
        return json();
    case Op::GetBalloon: {
        const VmConfig& c = vmm_ ? vmm_->config() : pending_;
        if (!c.balloon) return bad_request("no balloon device is configured (PUT /balloon)");
        return api::balloon_json(*c.balloon);
    }
    case Op::PutLogger: {
        TRY(preboot_only("PUT /logger"));
        const auto& l = std::get<api::LoggerConfig>(r.payload);
        if (l.path) TRY(log_to_file(*l.path));
        if (l.level) spdlog::set_level(spdlog::level::from_str(*l.level));
        if (l.path) pending_.log_path = *l.path;
        if (l.level) pending_.log_level = *l.level;
        return json();
    }
    case Op::PutMetrics: {
        TRY(preboot_only("PUT /metrics"));
        const auto& path = std::get<std::string>(r.payload);
        metrics_file_ = TRY(metrics::MetricsFile::open(path));
        pending_.metrics_path = path;
        return json();
    }

    case Op::InstanceStart:
        TRY(start_vm());
        return json();
    case Op::SendCtrlAltDel:
        if (!vmm_) return not_allowed("SendCtrlAltDel needs a running guest");
        TRY(vmm_->send_ctrl_alt_del());
        return json();
    case Op::FlushMetrics:
        TRY(flush_metrics());
        return json();
    case Op::PauseVm:
        if (!vmm_) return not_allowed("the guest has not started: nothing to pause");
        TRY(vmm_->pause());
        return json();
    case Op::ResumeVm:
        if (!vmm_) return not_allowed("the guest has not started: nothing to resume");
        TRY(vmm_->resume());
        return json();
    case Op::SnapshotCreate: {
        if (!vmm_) return not_allowed("snapshot/create: the guest has not started");
        const auto& c = std::get<api::SnapshotCreateRequest>(r.payload);
        VmConfig running = vmm_->config();
        running.cmdline = pending_.cmdline;
        TRY(vmm_->snapshot(c.snapshot_path, c.mem_file_path, api::full_config_json(running).dump(), c.diff));
        return json();
    }
    case Op::SnapshotLoad:
        TRY(load_snapshot(std::get<api::SnapshotLoadRequest>(r.payload)));
        return json();
    case Op::SaveDeviceState:
        if (!vmm_) return not_allowed("the guest has not started");
        TRY(vmm_->save_device_state(std::get<std::string>(r.payload)));
        return json();
    case Op::LoadDeviceState:
        if (!vmm_) return not_allowed("the guest has not started");
        TRY(vmm_->load_device_state(std::get<std::string>(r.payload)));
        return json();
    case Op::Migrate: {
        if (!vmm_ || vmm_->state() != Vmm::State::Running) return not_allowed("migrate: only a running VM migrates");
        TRY(migration::parse_endpoint(std::get<api::MigrateRequest>(r.payload).destination));
        VmConfig running = vmm_->config();
        running.cmdline = pending_.cmdline;
        migration_.reset();  // a finished one
        migration_ = std::make_unique<MigrationJob>(*vmm_, std::get<api::MigrateRequest>(r.payload),
                                                    api::full_config_json(running).dump());
        return json();
    }
    case Op::GetMigrate: {
        if (!migration_) return not_allowed("no migration has been started (PUT /migrate)");
        const auto p = migration_->progress();
        json j = {{"phase", phase_name(p.phase)}, {"round", p.round}, {"pages_sent", p.pages_sent},
                  {"bytes_sent", p.bytes_sent}, {"dirty_pages", p.dirty_pages}, {"dirty_rate_pages_s", p.dirty_rate},
                  {"bandwidth_bytes_s", p.bandwidth}, {"expected_downtime_ms", p.expected_downtime_ms},
                  {"cpu_throttle_pct", p.throttle_pct}, {"eta_ms", p.eta_ms}, {"total_ms", p.total_ms}};
        if (p.phase == MigrationJob::Phase::Completed) j["downtime_ms"] = p.downtime_ms;
        if (!p.error.empty()) j["error"] = p.error;
        return j;
    }
    }
    return bad_request("unknown request");
}

ApiResponse Controller::prometheus_metrics() const {
    const auto process = metrics::read_process_stats();
    metrics::Snapshot s;
    if (vmm_) {
        const auto sources = vmm_->metric_sources();
        s = metrics::collect(&sources, process);
    } else {
        s = metrics::collect(nullptr, process);
    }
    return ApiResponse{200, metrics::render_prometheus(s), std::string(metrics::kPrometheusContentType)};
}

// Without a metrics_path there is nothing to write, and Firecracker answers success too.
Result<void> Controller::flush_metrics() {
    if (!metrics_file_) return {};
    const auto process = metrics::read_process_stats();
    if (vmm_) {
        const auto sources = vmm_->metric_sources();
        return metrics_file_->flush(metrics::collect(&sources, process));
    }
    return metrics_file_->flush(metrics::collect(nullptr, process));
}

ApiResponse Controller::handle(const ApiRequest& r) {
    if (r.op == Op::GetMetrics) return prometheus_metrics();
    auto j = dispatch(r);
    if (!j) {
        log::info("API request refused: {}", j.error().what());
        return api::fault(j.error());
    }
    if (j->is_null()) return ApiResponse{204, "", ""};
    return api::ok_json(*j);
}

int Controller::run() {
    if (auto r = seccomp::configure(o_.seccomp); !r) {
        log::error("{}", r.error().what());
        return kExitError;
    }
    // --config-file's "logger": its log_path takes the log from here on, as PUT /logger does.
    if (!pending_.log_path.empty()) {
        if (auto r = log_to_file(pending_.log_path); !r) {
            log::error("{}", r.error().what());
            return kExitError;
        }
    }
    sigset_t stop_signals;
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGINT);
    sigaddset(&stop_signals, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
    UniqueFd sigfd(::signalfd(-1, &stop_signals, SFD_CLOEXEC | SFD_NONBLOCK));
    UniqueFd ep(::epoll_create1(EPOLL_CLOEXEC));
    // Periodic metrics flush, armed once the VM runs with a metrics_path.
    UniqueFd metrics_timer(::timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK));
    auto q = api::RequestQueue::create();
    if (!sigfd || !ep || !metrics_timer || !q) {
        log::error("controller set-up failed: {}", std::strerror(errno));
        return kExitError;
    }
    queue_ = std::move(*q);
    auto watch = [&](int fd) {
        epoll_event ev{};
        ev.events = EPOLLIN;
        ev.data.fd = fd;
        ::epoll_ctl(ep.get(), EPOLL_CTL_ADD, fd, &ev);
    };
    watch(sigfd.get());
    watch(queue_->fd());
    watch(metrics_timer.get());
    if (!pending_.metrics_path.empty()) {  // --config-file's "metrics"
        auto f = metrics::MetricsFile::open(pending_.metrics_path);
        if (!f) {
            log::error("{}", f.error().what());
            return kExitError;
        }
        metrics_file_ = std::move(*f);
    }


    std::unique_ptr<api::ApiServer> server;
    if (!o_.api_socket.empty()) {
        auto s = api::ApiServer::start(o_.api_socket, queue_);
        if (!s) {
            log::error("{}", s.error().what());
            return kExitError;
        }
        server = std::move(*s);
    }
    if (!o_.incoming.empty()) {
        if (auto r = receive_migration(); !r) {
            log::error("--incoming: {}", r.error().what());
            return kExitError;
        }
    } else if (o_.restore) {
        if (auto r = load_snapshot(*o_.restore); !r) {
            log::error("--restore: {}", r.error().what());
            return kExitError;
        }
    } else if (o_.start_now) {
        if (auto r = start_vm(); !r) {
            log::error("{}", r.error().what());
            return kExitError;
        }
    }

    bool vm_watched = false, metrics_armed = false;
    std::optional<GuestExit> ended;
    while (!ended) {
        if (vmm_ && !vm_watched) {
            watch(vmm_->exits().wake_fd());
            vm_watched = true;
        }
        if (vmm_ && metrics_file_ && !metrics_armed) {
            const itimerspec every{{kMetricsPeriod.count(), 0}, {kMetricsPeriod.count(), 0}};
            ::timerfd_settime(metrics_timer.get(), 0, &every, nullptr);
            metrics_armed = true;
        }
        std::array<epoll_event, 8> evs;
        int n = ::epoll_wait(ep.get(), evs.data(), static_cast<int>(evs.size()), -1);
        if (n < 0 && errno != EINTR) {
            ended = GuestExit{ExitKind::Error, 0, fmt::format("epoll_wait: {}", std::strerror(errno))};
            break;
        }
        for (int i = 0; i < n && !ended; ++i) {
            int fd = evs[static_cast<size_t>(i)].data.fd;
            if (fd == sigfd.get()) {
                signalfd_siginfo si{};
                if (::read(sigfd.get(), &si, sizeof si) != sizeof si) continue;
                ended = GuestExit{ExitKind::Signal, static_cast<int>(si.ssi_signo),
                                  fmt::format("stopped by signal {}", si.ssi_signo)};
            } else if (fd == metrics_timer.get()) {
                uint64_t expirations;
                if (::read(metrics_timer.get(), &expirations, sizeof expirations) != sizeof expirations) continue;
                if (auto r = flush_metrics(); !r) log::warn("periodic metrics flush: {}", r.error().what());
            } else if (fd == queue_->fd()) {
                for (auto& item : queue_->take()) item.answer.set_value(handle(item.request));
            } else if (vmm_ && fd == vmm_->exits().wake_fd()) {
                ended = GuestExit{ExitKind::Error, 0, "the VM ended"};  // stop() returns the real reason
            }
        }
    }
    if (migration_ && migration_->progress().phase == MigrationJob::Phase::Completed) {
        // The VM runs at the destination now. Whoever started the migration learns so from
        // GET /migrate (`kestrel migrate` polls it): the API answers a little longer.
        vmm_->stop(*ended);
        const auto until = std::chrono::steady_clock::now() + kMigratedGrace;
        while (std::chrono::steady_clock::now() < until) {
            pollfd p{queue_->fd(), POLLIN, 0};
            if (::poll(&p, 1, 100) > 0)
                for (auto& item : queue_->take()) item.answer.set_value(handle(item.request));
        }
    }
    queue_->close();
    server.reset();
    migration_.reset();  // cancelled if still running: the VM resumes, then stops here
    GuestExit how = vmm_ ? vmm_->stop(*ended) : *ended;
    if (auto r = flush_metrics(); !r) log::warn("metrics flush at exit: {}", r.error().what());
    int code = exit_code_for(how);
    log_exit(how, code);
    return code;
}

}  // namespace kestrel
