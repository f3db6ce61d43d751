// GuestAddress: a guest-physical address. A distinct type so it never mixes with host pointers.
#pragma once

#include <compare>
#include <cstdint>
#include <optional>

namespace kestrel {

struct GuestAddress {
    uint64_t raw = 0;

    constexpr GuestAddress() = default;
    constexpr explicit GuestAddress(uint64_t a) : raw(a) {}
    constexpr auto operator<=>(const GuestAddress&) const = default;

    // Overflow-checked offset; every guest-supplied address goes through this.
    constexpr std::optional<GuestAddress> checked_add(uint64_t off) const {
        uint64_t r;
        if (__builtin_add_overflow(raw, off, &r)) return std::nullopt;
        return GuestAddress(r);
    }
    // Unchecked, for VMM-chosen constants only.
    constexpr GuestAddress operator+(uint64_t off) const { return GuestAddress(raw + off); }
};

}  // namespace kestrel
