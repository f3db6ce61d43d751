// Firecracker's rate_limiter objects as the configuration keeps them (RateLimiterConfig, from
// the API and --config-file) and as the devices take them (RateLimits, devices/rate_limiter.hpp),
// and what a PATCH does to the kept one. Firecracker's rule for both: a bucket given replaces
// the old one, or removes it when it limits nothing (size or refill_time 0); a bucket not
// given is left alone (its RateLimiterUpdate / BucketUpdate::None).
#pragma once

#include <optional>

#include "devices/rate_limiter.hpp"
#include "vmm/vm_config.hpp"

namespace kestrel {

inline BucketParams bucket_params(const TokenBucketConfig& b) { return {b.size, b.one_time_burst, b.refill_time_ms}; }

// Absent buckets stay absent: unlimited on a new limiter, unchanged in RateLimiter::update.
inline RateLimits rate_limits(const std::optional<RateLimiterConfig>& c) {
    RateLimits l;
    if (!c) return l;
    if (c->bandwidth) l.bandwidth = bucket_params(*c->bandwidth);
    if (c->ops) l.ops = bucket_params(*c->ops);
    return l;
}

// The kept configuration after PATCH `change`; nullopt when nothing is limited any more.
inline std::optional<RateLimiterConfig> patched(std::optional<RateLimiterConfig> old, const RateLimiterConfig& change) {
    RateLimiterConfig r = old.value_or(RateLimiterConfig{});
    auto apply = [](std::optional<TokenBucketConfig>& kept, const std::optional<TokenBucketConfig>& given) {
        if (!given) return;
        if (given->size == 0 || given->refill_time_ms == 0) kept.reset();
        else kept = given;
    };
    apply(r.bandwidth, change.bandwidth);
    apply(r.ops, change.ops);
    if (!r.bandwidth && !r.ops) return std::nullopt;
    return r;
}

}  // namespace kestrel
