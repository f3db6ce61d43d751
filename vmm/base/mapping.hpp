// Mapping: sole owner of one mmap()ed range, unmapped on destruction.
#pragma once

#include <sys/mman.h>

#include <cstddef>
#include <cstdint>
#include <utility>

#include "vmm/base/error.hpp"

namespace kestrel {

class Mapping {
public:
    Mapping() = default;
    Mapping(const Mapping&) = delete;
    Mapping& operator=(const Mapping&) = delete;
    Mapping(Mapping&& o) noexcept
        : addr_(std::exchange(o.addr_, nullptr)), size_(std::exchange(o.size_, 0)) {}
    Mapping& operator=(Mapping&& o) noexcept {
        if (this != &o) {
            reset();
            addr_ = std::exchange(o.addr_, nullptr);
            size_ = std::exchange(o.size_, 0);
        }
        return *this;
    }
    ~Mapping() { reset(); }

    // Anonymous private memory, not reserved against swap (guest RAM is touched lazily).
    // From 2 MiB up it starts at a 2 MiB boundary, so transparent huge pages (and KVM's 2 MiB
    // mappings of them) can back it; kernels before 6.7 do not align such mappings themselves.
    static Result<Mapping> anonymous(size_t size) {
        constexpr size_t kHuge = size_t{2} << 20;
        const bool align = size >= kHuge && size <= SIZE_MAX - kHuge;
        const size_t span = align ? size + kHuge : size;
        void* p = ::mmap(nullptr, span, PROT_READ | PROT_WRITE,
                         MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (p == MAP_FAILED) return fail_errno("mmap of {} bytes", size);
        auto* base = static_cast<uint8_t*>(p);
        if (!align) return Mapping(base, size);
        const auto start = (reinterpret_cast<uintptr_t>(base) + kHuge - 1) & ~uintptr_t{kHuge - 1};
        auto* aligned = reinterpret_cast<uint8_t*>(start);
        if (aligned > base) ::munmap(base, static_cast<size_t>(aligned - base));
        const size_t tail = static_cast<size_t>(base + span - (aligned + size));
        if (tail > 0) ::munmap(aligned + size, tail);
        return Mapping(aligned, size);
    }
    // A shared mapping of an fd (e.g. a vCPU's kvm_run area).
    static Result<Mapping> of_fd(int fd, size_t size, int prot = PROT_READ | PROT_WRITE) {
        void* p = ::mmap(nullptr, size, prot, MAP_SHARED, fd, 0);
        if (p == MAP_FAILED) return fail_errno("mmap of fd {} ({} bytes)", fd, size);
        return Mapping(static_cast<uint8_t*>(p), size);
    }

    // A private read-only view of a whole file (kernel and initrd images).
    static Result<Mapping> of_file_readonly(int fd, size_t size) {
        void* p = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (p == MAP_FAILED) return fail_errno("mmap of a {}-byte file", size);
        return Mapping(static_cast<uint8_t*>(p), size);
    }

    // Copy-on-write guest RAM backed by `size` bytes of a file from `offset` (a snapshot's
    // memory file): pages load when first touched, writes stay in this process.
    static Result<Mapping> file_private(int fd, off_t offset, size_t size) {
        void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_NORESERVE, fd, offset);
        if (p == MAP_FAILED) return fail_errno("mmap of {} bytes at offset {} of a file", size, offset);
        return Mapping(static_cast<uint8_t*>(p), size);
    }

    uint8_t* data() const { return addr_; }
    size_t size() const { return size_; }

private:
    Mapping(uint8_t* a, size_t s) : addr_(a), size_(s) {}
    void reset() {
        if (addr_) ::munmap(addr_, size_);
        addr_ = nullptr;
        size_ = 0;
    }
    uint8_t* addr_ = nullptr;
    size_t size_ = 0;
};

}  // namespace kestrel
