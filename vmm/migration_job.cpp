#include "vmm/migration_job.hpp"

#include <sys/socket.h>

#include <algorithm>
#include <cstring>

#include "vmm/base/log.hpp"

namespace kestrel {

namespace {

using Clock = std::chrono::steady_clock;
constexpr uint64_t kPage = migration::kPageSize;

uint64_t ms_since(Clock::time_point t) {
    return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t).count());
}

uint64_t count_pages(const std::vector<std::vector<uint64_t>>& bits) {
    uint64_t n = 0;
    for (const auto& r : bits)
        for (uint64_t w : r) n += static_cast<uint64_t>(__builtin_popcountll(w));
    return n;
}

}  // namespace

const char* phase_name(MigrationJob::Phase p) {
    switch (p) {
    case MigrationJob::Phase::Connecting: return "connecting";
    case MigrationJob::Phase::Precopy: return "precopy";
    case MigrationJob::Phase::StopAndCopy: return "stop-and-copy";
    case MigrationJob::Phase::Completed: return "completed";
    case MigrationJob::Phase::Failed: return "failed";
    case MigrationJob::Phase::Cancelled: return "cancelled";
    }
    return "?";
}

MigrationJob::MigrationJob(Vmm& vmm, api::MigrateRequest req, std::string config_json)
    : vmm_(vmm), req_(std::move(req)), config_json_(std::move(config_json)), started_(Clock::now()) {
    thread_ = std::thread([this] { run(); });
}

MigrationJob::~MigrationJob() {
    cancel();
    if (thread_.joinable()) thread_.join();
}

void MigrationJob::cancel() {
    cancel_.store(true);
    if (int fd = sock_.load(); fd >= 0) ::shutdown(fd, SHUT_RDWR);  // unblocks a send or the answer's read
}

MigrationJob::Progress MigrationJob::progress() const {
    std::lock_guard lk(mu_);
    Progress p = p_;
    if (running_.load()) p.total_ms = ms_since(started_);
    return p;
}

void MigrationJob::set_phase(Phase ph) {
    std::lock_guard lk(mu_);
    p_.phase = ph;
}

void MigrationJob::run() {
    bool paused = false, released = false;
    auto r = migrate(paused, released);
    vmm_.set_cpu_throttle(0);
    {
        std::lock_guard lk(mu_);
        p_.throttle_pct = 0;
    }
    if (!r) {
        // Nothing is lost: the VM carries on here, with its disks locked and taps attached again.
        if (released)
            if (auto rr = vmm_.acquire_backends(); !rr)
                log::error("migration: taking the disks and taps back: {}; the VM resumes without it",
                           rr.error().what());
        if (paused)
            if (auto rr = vmm_.resume(); !rr) log::error("migration: resuming the VM: {}", rr.error().what());
        if (auto rr = vmm_.set_dirty_tracking(false); !rr) log::warn("migration: {}", rr.error().what());
        std::lock_guard lk(mu_);
        p_.phase = cancel_.load() ? Phase::Cancelled : Phase::Failed;
        p_.error = r.error().what();
        p_.total_ms = ms_since(started_);
        log::error("migration to {} {}: {}; the VM keeps running here", req_.destination,
                   cancel_.load() ? "cancelled" : "failed", p_.error);
    }
    sock_.store(-1);
    running_.store(false);
}

// Pages of every region: all non-zero ones (`dirty` null: round 0, the destination's RAM is
// zero), or those set in `dirty`; contiguous ones go in one PAGES message.
Result<void> MigrationJob::send_round(migration::StreamWriter& w, const std::vector<std::vector<uint64_t>>* dirty,
                                      uint64_t& pages) {
    static const uint8_t zero[kPage] = {};
    const auto regions = vmm_.ram_regions();
    const auto t0 = Clock::now();
    const uint64_t sent0 = w.bytes_sent();
    // For the ETA: the pages this round may still send. Round 0 counts every page not yet
    // looked at (zero ones are skipped, so it overestimates), later rounds the dirty ones.
    uint64_t todo = 0, before = 0;
    if (dirty) todo = count_pages(*dirty);
    else
        for (const auto& r : regions) todo += r.size / kPage;
    for (size_t ri = 0; ri < regions.size(); before += regions[ri].size / kPage, ++ri) {
        const auto& r = regions[ri];
        auto is_zero = [&](uint64_t page) { return std::memcmp(r.host + page * kPage, zero, kPage) == 0; };
        auto wanted = [&](uint64_t page) {
            if (!dirty) return !is_zero(page);  // round 0: the destination's RAM is zero already
            return ((*dirty)[ri][page / 64] >> (page % 64) & 1) != 0;
        };
        const uint64_t n = r.size / kPage;
        for (uint64_t p = 0; p < n;) {
            if (cancel_.load()) return fail("cancelled");
            if (!wanted(p)) {
                ++p;
                continue;
            }
            // A run of pages that are all zero goes as a ZERO marker, a run of others as PAGES.
            const bool zeros = dirty && is_zero(p);
            uint64_t q = p + 1;
            while (q < n && q - p < migration::kMaxRunPages && wanted(q) && (!dirty || is_zero(q) == zeros)) ++q;
            if (zeros) {
                TRY(w.zero(r.gpa + p * kPage, static_cast<uint32_t>(q - p)));
                pages += q - p;
                p = q;
                continue;
            }
            TRY(w.pages(r.gpa + p * kPage, std::span(r.host + p * kPage, (q - p) * kPage)));
            pages += q - p;
            {
                const uint64_t done = dirty ? pages : before + q;
                const uint64_t rate = (w.bytes_sent() - sent0) * 1000 / std::max<uint64_t>(ms_since(t0), 1);
                std::lock_guard lk(mu_);
                p_.pages_sent += q - p;
                p_.bytes_sent = w.bytes_sent();
                // This round's rest at this round's pace, then the stop-and-copy.
                p_.eta_ms = (todo > done && rate ? (todo - done) * kPage * 1000 / rate : 0) + p_.expected_downtime_ms;
            }
            p = q;
            if (req_.max_bandwidth) {  // stay under the cap on average over the round
                const double due = static_cast<double>(w.bytes_sent() - sent0) / static_cast<double>(req_.max_bandwidth);
                const auto at = t0 + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(due));
                if (at > Clock::now()) std::this_thread::sleep_until(at);
            }
        }
    }
    return w.flush();
}

Result<void> MigrationJob::migrate(bool& paused, bool& released) {
    auto ep = TRY(migration::parse_endpoint(req_.destination));
    UniqueFd fd = TRY(migration::connect_to(ep));
    // A destination that stops reading (or answering) cannot hold the source past timeout_s:
    // a blocked send or read fails then, and the VM resumes here.
    const timeval limit{.tv_sec = static_cast<time_t>(req_.timeout_s), .tv_usec = 0};
    ::setsockopt(fd.get(), SOL_SOCKET, SO_SNDTIMEO, &limit, sizeof limit);
    ::setsockopt(fd.get(), SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof limit);
    sock_.store(fd.get());
    if (cancel_.load()) return fail("cancelled");
    migration::StreamWriter w(fd.get());
    TRY(w.header());
    TRY(w.config(config_json_));
    // The handshake: the destination builds the VM (memory, devices and their backing) and
    // says whether it can take it before a page goes.
    TRY(migration::read_answer(fd.get(), "the configuration"));
    TRY(vmm_.set_dirty_tracking(true));
    set_phase(Phase::Precopy);
    log::info("migration to {}: pre-copy of {} MiB of guest RAM", req_.destination,
              [&] { uint64_t t = 0; for (auto& r : vmm_.ram_regions()) t += r.size; return t >> 20; }());

    const auto deadline = started_ + std::chrono::seconds(req_.timeout_s);
    uint64_t bandwidth = 0;  // bytes/s, measured
    unsigned throttle = 0, outrun = 0;  // auto_converge: the throttle, rounds in a row outrun
    std::vector<std::vector<uint64_t>> dirty;
    for (int round = 0;; ++round) {
        if (Clock::now() > deadline) return fail("timeout_s {} passed in pre-copy round {}", req_.timeout_s, round);
        const auto t0 = Clock::now();
        const uint64_t bytes0 = w.bytes_sent();
        uint64_t pages = 0;
        TRY(send_round(w, round == 0 ? nullptr : &dirty, pages));
        const uint64_t elapsed_ms = std::max<uint64_t>(ms_since(t0), 1);
        if (w.bytes_sent() - bytes0 > (1u << 20)) bandwidth = (w.bytes_sent() - bytes0) * 1000 / elapsed_ms;
        dirty = TRY(vmm_.take_dirty_pages());
        const uint64_t left = count_pages(dirty);
        const uint64_t expected = bandwidth ? left * kPage * 1000 / bandwidth : left == 0 ? 0 : UINT64_MAX;
        {
            std::lock_guard lk(mu_);
            p_.round = round;
            p_.dirty_pages = left;
            p_.dirty_rate = left * 1000 / elapsed_ms;
            p_.bandwidth = bandwidth;
            p_.expected_downtime_ms = expected == UINT64_MAX ? 0 : expected;
        }
        log::info("migration: round {}: {} pages in {} ms, {} dirty since ({} MiB/s)", round, pages, elapsed_ms, left,
                  bandwidth >> 20);
        // Half the target for the last pages: the other half is for the state (vCPUs and
        // devices captured here, loaded there). Round 0 always has a dirty round after it: it
        // is the long one, and what the guest wrote meanwhile is the most.
        if (round > 0 && expected <= req_.downtime_ms / 2) break;
        if (req_.auto_converge && round > 0) {
            outrun = left * kPage * 2 > w.bytes_sent() - bytes0 ? outrun + 1 : 0;
            if (outrun >= 2 && throttle < Vmm::kMaxThrottlePct) {
                throttle = std::min(throttle ? throttle + kThrottleStep : kThrottleInitial, Vmm::kMaxThrottlePct);
                outrun = 0;
                vmm_.set_cpu_throttle(throttle);
                std::lock_guard lk(mu_);
                p_.throttle_pct = throttle;
                log::info("migration: the guest dirties {} pages/s, more than the link takes: vCPUs throttled to {}%",
                          left * 1000 / elapsed_ms, throttle);
            }
        }
        if (round + 1 >= kMaxRounds) {
            log::warn("migration: {} rounds without reaching downtime_ms {} (the guest writes {} pages/s); stopping "
                      "anyway, expected downtime {} ms", kMaxRounds, req_.downtime_ms, left * 1000 / elapsed_ms,
                      expected == UINT64_MAX ? 0 : expected);
            break;
        }
    }

    // Stop and copy. The state first: settling the virtio queues writes guest RAM (used
    // rings), which the last dirty pages then carry.
    set_phase(Phase::StopAndCopy);
    const auto stop_at = Clock::now();
    TRY(vmm_.pause());
    paused = true;
    const uint64_t pause_ms = ms_since(stop_at);
    auto state = TRY(vmm_.migration_state());
    const uint64_t state_ms = ms_since(stop_at) - pause_ms;
    auto last = TRY(vmm_.take_dirty_pages());
    const uint64_t dirty_ms = ms_since(stop_at);
    for (size_t ri = 0; ri < last.size(); ++ri)
        for (size_t i = 0; i < last[ri].size(); ++i) last[ri][i] |= dirty[ri][i];
    uint64_t pages = 0;
    TRY(send_round(w, &last, pages));
    const uint64_t pages_ms = ms_since(stop_at);
    TRY(w.state(state));
    TRY(vmm_.release_backends());
    released = true;
    TRY(w.done());
    const uint64_t sent_ms = ms_since(stop_at);
    TRY(migration::read_answer(fd.get(), "the VM"));
    log::info("migration: downtime {} ms: pause {} ms, state {} ms ({} bytes), dirty log at {} ms, {} last pages "
              "sent at {} ms, state and DONE at {} ms, the destination's OK at {} ms", ms_since(stop_at), pause_ms,
              state_ms, state.size(), dirty_ms, pages, pages_ms, sent_ms, ms_since(stop_at));
    const uint64_t downtime = ms_since(stop_at);
    {
        std::lock_guard lk(mu_);
        p_.phase = Phase::Completed;
        p_.downtime_ms = downtime;
        p_.total_ms = ms_since(started_);
        p_.bytes_sent = w.bytes_sent();
        log::info("migration to {} completed: {} pages ({} MiB) in {} ms, downtime {} ms ({} pages in it)",
                  req_.destination, p_.pages_sent, w.bytes_sent() >> 20, p_.total_ms, downtime, pages);
    }
    vmm_.exits().request({ExitKind::Migrated, 0, fmt::format("the VM migrated to {}", req_.destination)});
    return {};
}

}  // namespace kestrel
