// RateLimiter: Firecracker's token-bucket rate limiter for a device's requests or frames — a
// bandwidth bucket (bytes) and an operations bucket (requests), each optional — with the
// timerfd that wakes a throttled queue. Semantics follow Firecracker's
// src/vmm/src/rate_limiter/mod.rs (TokenBucket, RateLimiter) and its API's TokenBucket object:
//
//  - A bucket holds up to `size` tokens and starts full. Tokens come back continuously, in
//    proportion to the time elapsed: `size` tokens per `refill_time_ms`, capped at `size`.
//    Refills are exact (the level is kept in token x nanosecond units), so no fraction of a
//    token is lost or made up however often the bucket is looked at.
//  - `one_time_burst` extra tokens are spent first, once, and never come back.
//  - size 0 or refill_time 0: the bucket limits nothing (Firecracker's rule).
//  - A request of n tokens goes when the bucket holds them, all of them or none (with both
//    buckets: both, or neither; Firecracker gives back the ops token by hand, same effect).
//  - A request larger than the bucket can never find n tokens: it goes when the bucket is
//    full and leaves the bucket in debt (negative) by the excess, which later requests wait
//    out. Firecracker lets such a request go at once and then blocks for the excess; the
//    long-run rate is the same, but here no request goes earlier than a bucket-sized one.
//  - Blocked: when a request cannot go, the limiter arms its timerfd for the moment its
//    tokens will be there (not Firecracker's fixed 100 ms poll) and refuses every request
//    until the timer fired and the device called on_timer() — so a small request on
//    another queue cannot starve the big one that is waiting. The device holds the request
//    it could not start and stops processing that queue; the timer's event resumes it.
//    Nothing polls: one blocked request costs one timer wake-up.
//  - update() (PATCH at run time) replaces or removes buckets; a replaced bucket starts full
//    (Firecracker's update_buckets does the same). A throttled device is woken at once to
//    retry against the new buckets.
//
// Threads: consume/give_back/on_timer run on the device's thread (the event loop), update()
// on the controller's. One small mutex guards the buckets: the two buckets are taken
// together or not at all and a bucket is several words (level, burst, last time), which
// atomics could only do with a CAS loop over a copied state; the lock is held for that
// arithmetic and at most one timerfd_settime (which never blocks), never across device I/O,
// and the only other taker is a rare PATCH. Counters are relaxed atomics.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "devices/metrics.hpp"
#include "vmm/base/error.hpp"
#include "vmm/base/fd.hpp"

namespace kestrel {

// Nanoseconds on a monotonic clock: CLOCK_MONOTONIC in the VMM (monotonic_ns(), the timerfd's
// clock), any counter in tests.
using MonoNs = uint64_t;

// One bucket as Firecracker's API gives it (TokenBucket: size, one_time_burst, refill_time).
struct BucketParams {
    uint64_t size = 0;
    uint64_t one_time_burst = 0;
    uint64_t refill_time_ms = 0;
    bool operator==(const BucketParams&) const = default;
    bool limits() const { return size != 0 && refill_time_ms != 0; }
};

// Both buckets. For set(): nullopt (or a bucket that does not limit) = unlimited. For
// update(): nullopt keeps that bucket as it is.
struct RateLimits {
    std::optional<BucketParams> bandwidth;  // bytes
    std::optional<BucketParams> ops;        // requests or frames
    bool operator==(const RateLimits&) const = default;
};

// One token bucket; pure (time is an argument), so tests need no sleeping.
class TokenBucket {
public:
    // params.limits() must hold. Starts full, plus the one-time burst.
    TokenBucket(const BucketParams& params, MonoNs now);

    // Takes n tokens if they are there at `now` (see the header comment): true; else false
    // and nothing changes.
    bool take(uint64_t n, MonoNs now);
    // Nanoseconds from `now` until take(n) would succeed; 0 if it would now.
    uint64_t wait_ns(uint64_t n, MonoNs now);
    // Puts back n tokens that take() gave (the request could not be used after all): the
    // budget first, up to full, then the one-time burst, up to what it was configured.
    void give_back(uint64_t n);

    // Whole tokens in the budget at `now` (negative while in debt), burst not included.
    int64_t tokens(MonoNs now);
    uint64_t burst_left() const { return burst_; }
    const BucketParams& params() const { return p_; }

private:
    using Scaled = __int128;  // tokens x refill_ns: size <= 2^62, refill_ns <= 2^61
    void refill(MonoNs now);
    // Tokens of n that must come from the budget, and the level they need there.
    uint64_t from_budget(uint64_t n) const { return n > burst_ ? n - burst_ : 0; }
    Scaled needed(uint64_t m) const;

    BucketParams p_;
    Scaled refill_ns_;
    Scaled full_;
    Scaled level_;
    uint64_t burst_;
    MonoNs last_;
};

// Both buckets and the blocked state; pure as well.
class TokenBuckets {
public:
    struct Decision {
        bool go = true;
        uint64_t wait_ns = 0;  // !go: when the tokens will be there
    };
    void set(const RateLimits& limits, MonoNs now);
    void update(const RateLimits& change, MonoNs now);
    Decision consume(uint64_t ops, uint64_t bytes, MonoNs now);
    void give_back(uint64_t ops, uint64_t bytes);
    bool limited() const { return bandwidth_ || ops_; }
    RateLimits limits() const;
    TokenBucket* bandwidth() { return bandwidth_ ? &*bandwidth_ : nullptr; }
    TokenBucket* ops() { return ops_ ? &*ops_ : nullptr; }

private:
    std::optional<TokenBucket> bandwidth_, ops_;
};

class RateLimiter {
public:
    using Clock = std::function<MonoNs()>;
    // Creates the timerfd (CLOCK_MONOTONIC) even when nothing is limited, so a PATCH can add
    // limits later without a new fd to register. `clock` must be CLOCK_MONOTONIC's time for
    // the timer to match; tests may pass another to drive the buckets.
    static Result<std::unique_ptr<RateLimiter>> create(const RateLimits& limits = {},
                                                       Clock clock = monotonic_ns);

    // Before starting a request of `bytes` (one op): true = go, tokens taken. False = the
    // device must hold the request and stop processing that queue until the timer's event.
    bool consume(uint64_t ops, uint64_t bytes);
    void give_back(uint64_t ops, uint64_t bytes);
    // The device calls this on the timerfd's event: reads it, clears the block.
    void on_timer();
    bool blocked() const;

    // Any thread. `change`: see RateLimits. Wakes a blocked device at once.
    void update(const RateLimits& change);
    RateLimits limits() const;
    int timer_fd() const { return timer_.get(); }

    uint64_t throttled() const { return load_metric(throttled_); }
    uint64_t wakeups() const { return load_metric(wakeups_); }
    // `<prefix>_throttled`, `<prefix>_timer_wakeups`.
    void visit_metrics(MetricVisitor& v, std::string_view prefix, int queue = -1) const;

private:
    RateLimiter(UniqueFd timer, Clock clock) : timer_(std::move(timer)), clock_(std::move(clock)) {}
    void arm_locked(uint64_t ns);

    UniqueFd timer_;
    Clock clock_;
    mutable std::mutex mu_;
    TokenBuckets buckets_;  // under mu_
    bool blocked_ = false;  // under mu_: timer armed, every consume refused until on_timer()
    std::atomic<uint64_t> throttled_{0};
    std::atomic<uint64_t> wakeups_{0};
};

}  // namespace kestrel
