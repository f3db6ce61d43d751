#include "devices/rate_limiter.hpp"

#include <doctest/doctest.h>
#include <poll.h>
#include <sys/timerfd.h>

#include <vector>

using namespace kestrel;

namespace {

constexpr MonoNs kMs = 1'000'000;
constexpr MonoNs kSec = 1'000'000'000;
constexpr MonoNs kT0 = 1000 * kSec;  // an arbitrary start: the buckets only see differences

BucketParams bucket(uint64_t size, uint64_t refill_ms, uint64_t burst = 0) { return {size, burst, refill_ms}; }

// Nanoseconds the limiter's timerfd has left, 0 when disarmed.
uint64_t armed_ns(const RateLimiter& r) {
    itimerspec cur{};
    REQUIRE(::timerfd_gettime(r.timer_fd(), &cur) == 0);
    return static_cast<uint64_t>(cur.it_value.tv_sec) * kSec + static_cast<uint64_t>(cur.it_value.tv_nsec);
}

bool fires_within(const RateLimiter& r, int ms) {
    pollfd p{r.timer_fd(), POLLIN, 0};
    return ::poll(&p, 1, ms) == 1;
}

}  // namespace

TEST_CASE("token bucket: starts full, refills in proportion to time, never above size") {
    TokenBucket b(bucket(1000, 100), kT0);  // 10 tokens per ms
    CHECK(b.tokens(kT0) == 1000);
    CHECK(b.take(1000, kT0));
    CHECK_FALSE(b.take(1, kT0));
    CHECK(b.wait_ns(1, kT0) == 100'000);  // 100 ms / 1000 tokens
    CHECK(b.wait_ns(1000, kT0) == 100 * kMs);
    CHECK(b.tokens(kT0 + 50 * kMs) == 500);
    CHECK(b.tokens(kT0 + 99'999'999) == 999);  // 100 ms make the 1000th
    CHECK(b.tokens(kT0 + 10 * kSec) == 1000);
    CHECK(b.take(1000, kT0 + 10 * kSec));
    CHECK(b.tokens(kT0 + 10 * kSec) == 0);
}

TEST_CASE("token bucket: looking often loses no fraction of a token") {
    // 3 tokens per ms: a token every 333333.3 ns, looked at every 7 ns.
    TokenBucket b(bucket(3, 1), kT0);
    REQUIRE(b.take(3, kT0));
    CHECK(b.tokens(kT0 + 333'333) == 0);
    CHECK(b.tokens(kT0 + 333'334) == 1);
    for (MonoNs t = kT0 + 333'334; t < kT0 + kMs; t += 7) b.tokens(t);
    CHECK(b.tokens(kT0 + kMs) == 3);
    // And the wait it names is exactly enough, never one nanosecond short.
    REQUIRE(b.take(3, kT0 + kMs));
    uint64_t w = b.wait_ns(2, kT0 + kMs);
    CHECK(w == 666'667);
    CHECK_FALSE(b.take(2, kT0 + kMs + w - 1));
    CHECK(b.take(2, kT0 + kMs + w));
}

TEST_CASE("token bucket: the one-time burst goes first, once, and never refills") {
    TokenBucket b(bucket(100, 1000, 50), kT0);
    CHECK(b.take(30, kT0));
    CHECK(b.burst_left() == 20);
    CHECK(b.tokens(kT0) == 100);  // the budget is untouched while the burst lasts
    CHECK(b.take(40, kT0));       // 20 from the burst, 20 from the budget
    CHECK(b.burst_left() == 0);
    CHECK(b.tokens(kT0) == 80);
    CHECK(b.tokens(kT0 + 10 * kSec) == 100);
    CHECK(b.burst_left() == 0);
    // In all: size + burst at once, then the refill rate.
    TokenBucket c(bucket(100, 1000, 50), kT0);
    CHECK(c.take(150, kT0));
    CHECK_FALSE(c.take(1, kT0));
    CHECK(c.wait_ns(1, kT0) == 10 * kMs);
}

TEST_CASE("token bucket: a request larger than the bucket waits for a full bucket, then leaves a debt") {
    TokenBucket b(bucket(100, 100), kT0);  // 1 token per ms
    CHECK(b.take(50, kT0));
    CHECK_FALSE(b.take(250, kT0));
    CHECK(b.wait_ns(250, kT0) == 50 * kMs);  // until full, not until 250 tokens (never)
    MonoNs t = kT0 + 50 * kMs;
    CHECK(b.take(250, t));
    CHECK(b.tokens(t) == -150);
    CHECK(b.wait_ns(1, t) == 151 * kMs);  // the debt first
    CHECK(b.wait_ns(250, t) == 250 * kMs);
    CHECK(b.tokens(t + 150 * kMs) == 0);
}

TEST_CASE("token bucket: give_back refills the budget, then the burst, within their limits") {
    TokenBucket b(bucket(100, 1000, 20), kT0);
    REQUIRE(b.take(70, kT0));  // burst 0, budget 50
    b.give_back(30);
    CHECK(b.tokens(kT0) == 80);
    b.give_back(35);  // 20 fill the budget, 15 go back to the burst
    CHECK(b.tokens(kT0) == 100);
    CHECK(b.burst_left() == 15);
    b.give_back(1000);
    CHECK(b.burst_left() == 20);
}

TEST_CASE("token buckets: ops and bandwidth together, all or nothing") {
    TokenBuckets tb;
    tb.set({bucket(1000, 1000), bucket(2, 1000)}, kT0);  // 1000 B/s, 2 ops/s
    CHECK(tb.consume(1, 600, kT0).go);
    auto d = tb.consume(1, 600, kT0);  // bytes short by 200: 200 ms
    CHECK_FALSE(d.go);
    CHECK(d.wait_ns == 200 * kMs);
    CHECK(tb.ops()->tokens(kT0) == 1);  // the op was not taken
    CHECK(tb.consume(1, 300, kT0).go);
    CHECK(tb.ops()->tokens(kT0) == 0);
    CHECK(tb.bandwidth()->tokens(kT0) == 100);
    d = tb.consume(1, 10, kT0);  // ops short: one every 500 ms
    CHECK_FALSE(d.go);
    CHECK(d.wait_ns == 500 * kMs);
    d = tb.consume(1, 1000, kT0);  // both short: the longer wait
    CHECK(d.wait_ns == 900 * kMs);
    CHECK(tb.bandwidth()->tokens(kT0) == 100);
    // A bucket that does not limit is no bucket; a request without bytes needs no bandwidth.
    tb.set({bucket(0, 1000), bucket(5, 0)}, kT0);
    CHECK_FALSE(tb.limited());
    tb.set({bucket(10, 1000), std::nullopt}, kT0);
    CHECK(tb.consume(1, 10, kT0).go);
    CHECK(tb.consume(1, 0, kT0).go);
    CHECK_FALSE(tb.consume(1, 1, kT0).go);
}

TEST_CASE("token buckets: update keeps, replaces (full) or removes each bucket") {
    TokenBuckets tb;
    tb.set({bucket(1000, 1000), bucket(10, 1000)}, kT0);
    REQUIRE(tb.consume(10, 1000, kT0).go);
    tb.update({std::nullopt, bucket(20, 1000)}, kT0);
    CHECK(tb.limits() == RateLimits{bucket(1000, 1000), bucket(20, 1000)});
    CHECK(tb.bandwidth()->tokens(kT0) == 0);  // kept as it was
    CHECK(tb.ops()->tokens(kT0) == 20);       // replaced: full
    tb.update({bucket(0, 0), std::nullopt}, kT0);
    CHECK_FALSE(tb.limits().bandwidth);
    CHECK(tb.consume(1, 1 << 30, kT0).go);
}

TEST_CASE("token buckets: the long-run rate is the configured one, for any request size") {
    // 4 MiB/s in 512 KiB buckets (refill 125 ms) with a 1 MiB burst; each request goes as
    // soon as the limiter lets it, as a device woken by the limiter's timer would send it.
    constexpr uint64_t kSize = 512 << 10, kBurst = 1 << 20;
    constexpr double kRate = 4194304.0;  // bytes per second
    for (uint64_t req : {4096ull, 65536ull, 1ull << 20, 3ull << 20}) {
        CAPTURE(req);
        TokenBuckets tb;
        tb.set({bucket(kSize, 125, kBurst), std::nullopt}, kT0);
        MonoNs t = kT0;
        uint64_t bytes = 0;
        while (t < kT0 + 60 * kSec) {
            auto d = tb.consume(1, req, t);
            if (d.go) bytes += req;
            else t += d.wait_ns;
        }
        // What went is what the bucket held at the start plus what it earned, to within one
        // request and one bucket (a request larger than the bucket waits for a full one).
        const double secs = static_cast<double>(t - kT0) / 1e9;
        const double owed = kSize + kBurst + kRate * secs;
        CHECK(static_cast<double>(bytes) <= owed + static_cast<double>(req));
        CHECK(static_cast<double>(bytes) >= owed - static_cast<double>(req + kSize));
        const double rate = static_cast<double>(bytes) / secs;
        CHECK(rate >= kRate * 0.99);
        CHECK(rate <= kRate * 1.01);
    }
}

TEST_CASE("rate limiter: a blocked limiter refuses everything until its timer, armed for when the tokens are there") {
    MonoNs now = kT0;
    auto r = RateLimiter::create({bucket(1000, 10'000), std::nullopt}, [&] { return now; });  // 100 B/s
    REQUIRE(r.has_value());
    RateLimiter& rl = **r;
    CHECK(armed_ns(rl) == 0);
    CHECK(rl.consume(1, 1000));
    CHECK_FALSE(rl.consume(1, 500));  // 5 s away
    CHECK(rl.blocked());
    CHECK(rl.throttled() == 1);
    uint64_t left = armed_ns(rl);
    CHECK(left <= 5 * kSec);
    CHECK(left > 4 * kSec);
    // Blocked: even a request the bucket could serve waits its turn, and the timer stays.
    now += 6 * kSec;
    CHECK_FALSE(rl.consume(1, 1));
    CHECK(rl.throttled() == 1);
    CHECK(armed_ns(rl) <= left);
    CHECK(armed_ns(rl) > 0);
    // A stale readiness (nothing expired, timer still armed) keeps the block.
    rl.on_timer();
    CHECK(rl.blocked());
    CHECK(rl.wakeups() == 1);
}

TEST_CASE("rate limiter: update while throttled wakes the device at once, new buckets full") {
    MonoNs now = kT0;
    auto r = RateLimiter::create({bucket(1000, 10'000), bucket(1, 60'000)}, [&] { return now; });
    REQUIRE(r.has_value());
    RateLimiter& rl = **r;
    REQUIRE(rl.consume(1, 1000));
    REQUIRE_FALSE(rl.consume(1, 1000));  // a minute away (ops)
    CHECK(armed_ns(rl) > 50 * kSec);
    rl.update({bucket(1 << 20, 1000), std::nullopt});  // ops kept: still one a minute
    CHECK(fires_within(rl, 1000));
    rl.on_timer();
    CHECK_FALSE(rl.blocked());
    CHECK_FALSE(rl.consume(1, 1000));  // the ops bucket still says no
    CHECK(armed_ns(rl) > 50 * kSec);
    rl.update({std::nullopt, bucket(0, 0)});  // ops removed
    CHECK(fires_within(rl, 1000));
    rl.on_timer();
    CHECK(rl.consume(1, 1 << 20));  // the new bandwidth bucket started full
    CHECK_FALSE(rl.consume(1, 1));
    CHECK(rl.limits() == RateLimits{bucket(1 << 20, 1000), std::nullopt});
    CHECK(rl.wakeups() == 2);
}

TEST_CASE("rate limiter: without limits nothing is refused, and a PATCH can add them later") {
    auto r = RateLimiter::create();
    REQUIRE(r.has_value());
    RateLimiter& rl = **r;
    CHECK(rl.timer_fd() >= 0);
    for (int i = 0; i < 1000; ++i) REQUIRE(rl.consume(1, 1 << 20));
    rl.update({std::nullopt, bucket(1, 20)});  // one op per 20 ms, on the real clock
    CHECK(rl.consume(1, 0));
    CHECK_FALSE(rl.consume(1, 0));
    CHECK(fires_within(rl, 2000));
    rl.on_timer();
    CHECK(rl.consume(1, 0));
    CHECK(rl.wakeups() == 1);
    CHECK(rl.throttled() == 1);
}
