// LoadPlan: every guest-memory write a loader intends, collected first and checked as a whole
// (each range inside guest RAM, no two overlapping) before the first byte is written. A bad
// image therefore leaves guest memory untouched.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "vmm/base/error.hpp"
#include "vmm/memory/guest_memory.hpp"

namespace kestrel::boot {

class LoadPlan {
public:
    // `bytes` must outlive apply(); `what` names the range in error messages.
    void copy(GuestAddress dst, std::span<const uint8_t> bytes, std::string what);
    // The plan keeps its own copy (for boot structures built on the stack).
    void copy_owned(GuestAddress dst, std::vector<uint8_t> bytes, std::string what);
    void zero(GuestAddress dst, uint64_t len, std::string what);

    Result<void> validate(const GuestMemory& mem) const;
    // validate(), then perform every write.
    Result<void> apply(GuestMemory& mem) const;

private:
    struct Write {
        GuestAddress dst;
        uint64_t len;
        std::span<const uint8_t> bytes;  // empty with len > 0: zero-fill
        size_t owned_index;              // SIZE_MAX unless bytes live in owned_
        std::string what;
    };
    std::span<const uint8_t> bytes_of(const Write& w) const;

    std::vector<Write> writes_;
    std::vector<std::vector<uint8_t>> owned_;
};

}  // namespace kestrel::boot
