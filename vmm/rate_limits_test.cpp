#include "vmm/rate_limits.hpp"

#include <doctest/doctest.h>

using namespace kestrel;

TEST_CASE("rate limits: PATCH replaces the buckets it gives, removes zero ones, keeps the rest") {
    const TokenBucketConfig bw{4 << 20, 1 << 20, 1000}, ops{100, 0, 1000}, zero{0, 0, 100};
    RateLimiterConfig both{bw, ops};
    CHECK(patched(both, RateLimiterConfig{}) == both);
    CHECK(patched(both, RateLimiterConfig{std::nullopt, TokenBucketConfig{5, 0, 10}}) ==
          RateLimiterConfig{bw, TokenBucketConfig{5, 0, 10}});
    CHECK(patched(both, RateLimiterConfig{zero, std::nullopt}) == RateLimiterConfig{std::nullopt, ops});
    CHECK(patched(both, RateLimiterConfig{zero, TokenBucketConfig{7, 0, 0}}) == std::nullopt);
    CHECK(patched(std::nullopt, RateLimiterConfig{bw, std::nullopt}) == RateLimiterConfig{bw, std::nullopt});
    CHECK(patched(std::nullopt, RateLimiterConfig{zero, std::nullopt}) == std::nullopt);
}

TEST_CASE("rate limits: the configuration's buckets as the devices take them") {
    RateLimits l = rate_limits(RateLimiterConfig{TokenBucketConfig{4096, 512, 100}, std::nullopt});
    CHECK(l == RateLimits{BucketParams{4096, 512, 100}, std::nullopt});
    CHECK(rate_limits(std::nullopt) == RateLimits{});
    // A zero bucket passes through: the limiter treats it as no limit (Firecracker's rule).
    CHECK_FALSE(rate_limits(RateLimiterConfig{TokenBucketConfig{0, 0, 100}, std::nullopt}).bandwidth->limits());
}
