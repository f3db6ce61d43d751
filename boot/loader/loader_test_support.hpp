// Helpers shared by the loader tests: guest memory, artefact files, a zero-memory scan and a
// tiny ELF image builder. Test-only.
#pragma once

#include <doctest/doctest.h>

#include <array>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "vmm/memory/guest_memory.hpp"

namespace kestrel::boot::test {

inline constexpr uint64_t kMiB = 1ull << 20;

inline GuestMemory make_memory(uint64_t size) {
    std::array spec{GuestRegionSpec{GuestAddress(0), size}};
    auto mem = GuestMemory::create(spec);
    REQUIRE_MESSAGE(mem, (mem ? "" : mem.error().what()));
    return std::move(*mem);
}

// Reads $KESTREL_ARTIFACTS/kernel/<name>; fails the test (not skips) when it is missing.
inline std::vector<uint8_t> read_kernel_artifact(const char* name) {
    const char* dir = std::getenv("KESTREL_ARTIFACTS");
    std::string path = std::string(dir ? dir : ".cache/artifacts") + "/kernel/" + name;
    std::ifstream f(path, std::ios::binary);
    REQUIRE_MESSAGE(f.good(), "kernel artefact " << path
                                                 << " is missing: run tools/fetch-kernel.sh");
    return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}

// True when no byte of guest RAM has been written (untouched anonymous memory reads as 0).
inline bool all_zero(const GuestMemory& mem) {
    for (const auto& r : mem.regions()) {
        const auto* p = r.host_base();
        static const std::array<uint8_t, 1 << 16> zeros{};
        for (uint64_t off = 0; off < r.size(); off += zeros.size())
            if (std::memcmp(p + off, zeros.data(), zeros.size()) != 0) return false;
    }
    return true;
}

template <class T>
T load(const std::vector<uint8_t>& v, uint64_t off) {
    T x;
    REQUIRE(off + sizeof x <= v.size());
    std::memcpy(&x, v.data() + off, sizeof x);
    return x;
}
template <class T>
void store(std::vector<uint8_t>& v, uint64_t off, T x) {
    REQUIRE(off + sizeof x <= v.size());
    std::memcpy(v.data() + off, &x, sizeof x);
}

// A copy of a (possibly packed) field: doctest's CHECK binds references, which packed
// fields cannot give.
template <class T>
T val(T v) {
    return v;
}

template <class T>
T guest(const GuestMemory& mem, uint64_t addr) {
    auto v = mem.read_obj<T>(GuestAddress(addr));
    REQUIRE(v);
    return *v;
}

}  // namespace kestrel::boot::test
