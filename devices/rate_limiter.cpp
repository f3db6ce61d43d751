#include "devices/rate_limiter.hpp"

#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <limits>

#include "vmm/base/log.hpp"

namespace kestrel {

namespace {
constexpr uint64_t kNsPerMs = 1'000'000;
constexpr uint64_t kNsPerSec = 1'000'000'000;
// The API caps size at 2^62 and refill_time at 2^40 ms (fc_json.cpp); the bucket clamps to
// the same so that tokens x nanoseconds always fit the 128-bit level, whoever calls it.
constexpr uint64_t kMaxSize = 1ull << 62;
constexpr uint64_t kMaxRefillMs = 1ull << 40;
}  // namespace

TokenBucket::TokenBucket(const BucketParams& params, MonoNs now)
    : p_{std::min(params.size, kMaxSize), std::min(params.one_time_burst, kMaxSize),
         std::min(params.refill_time_ms, kMaxRefillMs)},
      refill_ns_(Scaled(p_.refill_time_ms) * kNsPerMs),
      full_(Scaled(p_.size) * refill_ns_),
      level_(full_),
      burst_(p_.one_time_burst),
      last_(now) {}

void TokenBucket::refill(MonoNs now) {
    if (now <= last_) return;
    // elapsed < 2^64 and size <= 2^62: the product stays below 2^126.
    level_ = std::min(level_ + Scaled(now - last_) * Scaled(p_.size), full_);
    last_ = now;
}

// m tokens need m in the budget; more than the bucket holds need a full bucket (the excess
// becomes debt).
TokenBucket::Scaled TokenBucket::needed(uint64_t m) const {
    return Scaled(std::min(m, p_.size)) * refill_ns_;
}

bool TokenBucket::take(uint64_t n, MonoNs now) {
    refill(now);
    uint64_t m = from_budget(n);
    if (m == 0) {
        burst_ -= n;
        return true;
    }
    if (level_ < needed(m)) return false;
    level_ -= Scaled(m) * refill_ns_;
    burst_ = 0;
    return true;
}

uint64_t TokenBucket::wait_ns(uint64_t n, MonoNs now) {
    refill(now);
    uint64_t m = from_budget(n);
    if (m == 0) return 0;
    Scaled deficit = needed(m) - level_;
    if (deficit <= 0) return 0;
    // Rounded up: after this long the refill has added at least `deficit`.
    Scaled ns = (deficit + Scaled(p_.size) - 1) / Scaled(p_.size);
    return ns > Scaled(std::numeric_limits<uint64_t>::max()) ? std::numeric_limits<uint64_t>::max()
                                                              : static_cast<uint64_t>(ns);
}

void TokenBucket::give_back(uint64_t n) {
    Scaled room = full_ - level_;
    Scaled add = Scaled(n) * refill_ns_;
    if (add <= room) {
        level_ += add;
        return;
    }
    level_ = full_;
    uint64_t rest = n - static_cast<uint64_t>(room / refill_ns_);
    burst_ = std::min(p_.one_time_burst, burst_ + std::min(rest, p_.one_time_burst));
}

int64_t TokenBucket::tokens(MonoNs now) {
    refill(now);
    Scaled q = level_ / refill_ns_;
    if (level_ % refill_ns_ < 0) --q;  // floor, also in debt
    return static_cast<int64_t>(q);
}

void TokenBuckets::set(const RateLimits& limits, MonoNs now) {
    bandwidth_.reset();
    ops_.reset();
    update(limits, now);
}

void TokenBuckets::update(const RateLimits& change, MonoNs now) {
    auto apply = [now](std::optional<TokenBucket>& b, const std::optional<BucketParams>& p) {
        if (!p) return;
        if (p->limits()) b.emplace(*p, now);
        else b.reset();
    };
    apply(bandwidth_, change.bandwidth);
    apply(ops_, change.ops);
}

TokenBuckets::Decision TokenBuckets::consume(uint64_t ops, uint64_t bytes, MonoNs now) {
    uint64_t w_bytes = bandwidth_ ? bandwidth_->wait_ns(bytes, now) : 0;
    uint64_t w_ops = ops_ ? ops_->wait_ns(ops, now) : 0;
    if (w_bytes != 0 || w_ops != 0) return {false, std::max(w_bytes, w_ops)};
    if (bandwidth_) bandwidth_->take(bytes, now);
    if (ops_) ops_->take(ops, now);
    return {};
}

void TokenBuckets::give_back(uint64_t ops, uint64_t bytes) {
    if (bandwidth_) bandwidth_->give_back(bytes);
    if (ops_) ops_->give_back(ops);
}

RateLimits TokenBuckets::limits() const {
    RateLimits l;
    if (bandwidth_) l.bandwidth = bandwidth_->params();
    if (ops_) l.ops = ops_->params();
    return l;
}

Result<std::unique_ptr<RateLimiter>> RateLimiter::create(const RateLimits& limits, Clock clock) {
    UniqueFd t(::timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC));
    if (!t) return fail_errno("rate limiter: timerfd_create");
    std::unique_ptr<RateLimiter> r(new RateLimiter(std::move(t), std::move(clock)));
    r->buckets_.set(limits, r->clock_());
    return r;
}

void RateLimiter::arm_locked(uint64_t ns) {
    ns = std::max<uint64_t>(ns, 1);  // a zero it_value would disarm the timer
    itimerspec its{};
    its.it_value.tv_sec = static_cast<time_t>(std::min<uint64_t>(ns / kNsPerSec, std::numeric_limits<int32_t>::max()));
    its.it_value.tv_nsec = static_cast<long>(ns % kNsPerSec);
    if (::timerfd_settime(timer_.get(), 0, &its, nullptr) == 0) {
        blocked_ = true;
        return;
    }
    // Never leave a queue waiting for a timer that will not fire: let the request go.
    log::error("rate limiter: timerfd_settime: {}; not throttling", std::strerror(errno));
    blocked_ = false;
}

bool RateLimiter::consume(uint64_t ops, uint64_t bytes) {
    std::lock_guard lk(mu_);
    if (blocked_) return false;
    if (!buckets_.limited()) return true;
    auto d = buckets_.consume(ops, bytes, clock_());
    if (d.go) return true;
    arm_locked(d.wait_ns);
    if (!blocked_) return true;
    throttled_.fetch_add(1, std::memory_order_relaxed);
    return false;
}

void RateLimiter::give_back(uint64_t ops, uint64_t bytes) {
    std::lock_guard lk(mu_);
    buckets_.give_back(ops, bytes);
}

void RateLimiter::on_timer() {
    wakeups_.fetch_add(1, std::memory_order_relaxed);
    uint64_t expirations = 0;
    ssize_t n = ::read(timer_.get(), &expirations, sizeof expirations);
    std::lock_guard lk(mu_);
    if (n == sizeof expirations) {
        blocked_ = false;
        return;
    }
    // Nothing expired (a stale readiness): stay blocked only while the timer is still armed.
    itimerspec cur{};
    if (::timerfd_gettime(timer_.get(), &cur) != 0 || (cur.it_value.tv_sec == 0 && cur.it_value.tv_nsec == 0))
        blocked_ = false;
}

bool RateLimiter::blocked() const {
    std::lock_guard lk(mu_);
    return blocked_;
}

void RateLimiter::update(const RateLimits& change) {
    std::lock_guard lk(mu_);
    buckets_.update(change, clock_());
    if (blocked_) arm_locked(1);  // the held request retries against the new buckets now
}

RateLimits RateLimiter::limits() const {
    std::lock_guard lk(mu_);
    return buckets_.limits();
}

void RateLimiter::visit_metrics(MetricVisitor& v, std::string_view prefix, int queue) const {
    v.counter(fmt::format("{}_throttled", prefix), throttled(),
              "requests held back by the rate limiter until its timer", queue);
    v.counter(fmt::format("{}_timer_wakeups", prefix), wakeups(), "rate limiter timer events", queue);
}

}  // namespace kestrel
