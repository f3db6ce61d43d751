// Shared pieces of the libFuzzer targets in tests/fuzz: a reader over the input, guest RAM
// with two regions (so "inside RAM" has several edges), a poll-based stand-in for the VMM's
// event loop, interrupt/MSI recorders that check what devices deliver, and FuzzDriver, the
// driver side of a split virtqueue whose placement and contents come from the input.
//
// Input conventions (tests/fuzz/make_seeds.py writes the seeds in this format): little-endian,
// read front to back; reading past the end yields zeros, so every input is valid.
// Invariant violations end in check() -> __builtin_trap(), which libFuzzer reports as a
// crash with the input that caused it.
#pragma once

#include <poll.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <span>
#include <vector>

#include <spdlog/spdlog.h>

#include "devices/event_registry.hpp"
#include "devices/virtio/queue/virtq_spec.hpp"
#include "devices/virtio/virtio_device.hpp"
#include "vmm/memory/guest_memory.hpp"

namespace kestrel::fuzz {

inline void check(bool ok) {
    if (!ok) __builtin_trap();
}

// Devices log guest errors at debug/warn; a fuzzer produces them by the million. Set
// KESTREL_FUZZ_LOG=debug to see them while reproducing one input.
inline void quiet_logs() {
    const char* lvl = std::getenv("KESTREL_FUZZ_LOG");
    spdlog::set_level(lvl ? spdlog::level::from_str(lvl) : spdlog::level::off);
}

class Input {
public:
    Input(const uint8_t* data, size_t size) : data_(data), size_(size) {}
    bool empty() const { return pos_ >= size_; }
    size_t remaining() const { return size_ - std::min(pos_, size_); }

    uint8_t u8() { return static_cast<uint8_t>(take(1)); }
    uint16_t u16() { return static_cast<uint16_t>(take(2)); }
    uint32_t u32() { return static_cast<uint32_t>(take(4)); }
    uint64_t u64() { return take(8); }
    // Up to n bytes from the input; the rest of `out` is zero-filled.
    void bytes(std::span<uint8_t> out) {
        size_t n = std::min(out.size(), remaining());
        if (n) std::memcpy(out.data(), data_ + pos_, n);
        std::fill(out.begin() + static_cast<ptrdiff_t>(n), out.end(), uint8_t{0});
        pos_ += n;
    }

private:
    uint64_t take(size_t n) {
        uint64_t v = 0;
        size_t got = std::min(n, remaining());
        if (got) std::memcpy(&v, data_ + pos_, got);
        pos_ += got;
        return v;
    }
    const uint8_t* data_;
    size_t size_;
    size_t pos_ = 0;
};

// Guest RAM: [0, 512 KiB) and [1 MiB, 1 MiB + 64 KiB). Zeroed before every input, so one
// input's memory never leaks into the next (a crash reproduces from its input alone).
inline constexpr uint64_t kLowEnd = 0x80000;
inline constexpr uint64_t kHighStart = 0x100000;
inline constexpr uint64_t kHighEnd = 0x110000;

inline GuestMemory& memory() {
    static GuestMemory mem = [] {
        GuestRegionSpec specs[] = {{GuestAddress(0), kLowEnd},
                                   {GuestAddress(kHighStart), kHighEnd - kHighStart}};
        auto m = GuestMemory::create(specs);
        check(m.has_value());
        return std::move(*m);
    }();
    return mem;
}

inline void clear_memory(GuestMemory& mem) {
    check(mem.fill(GuestAddress(0), kLowEnd, 0).has_value());
    check(mem.fill(GuestAddress(kHighStart), kHighEnd - kHighStart, 0).has_value());
}

// Plays the VMM's level-triggered epoll loop over the fds devices register.
class FakeRegistry final : public EventRegistry {
public:
    Result<void> add(int fd, uint32_t events, Callback cb) override {
        if (regs_.count(fd)) return fail("fd {} already registered", fd);
        regs_[fd] = Reg{events, std::move(cb)};
        return {};
    }
    Result<void> remove(int fd) override {
        if (!regs_.erase(fd)) return fail("fd {} not registered", fd);
        return {};
    }
    size_t size() const { return regs_.size(); }

    // One epoll_wait-like round; returns how many callbacks ran.
    int dispatch(int timeout_ms) {
        std::vector<pollfd> fds;
        for (auto& [fd, r] : regs_) {
            short ev = 0;
            if (r.events & POLLIN) ev |= POLLIN;
            if (r.events & POLLOUT) ev |= POLLOUT;
            fds.push_back(pollfd{fd, ev, 0});
        }
        if (fds.empty() || ::poll(fds.data(), fds.size(), timeout_ms) <= 0) return 0;
        int ran = 0;
        for (auto& p : fds) {
            if (p.revents == 0) continue;
            auto it = regs_.find(p.fd);
            if (it == regs_.end()) continue;  // removed by an earlier callback this round
            auto cb = it->second.cb;
            cb(static_cast<uint32_t>(p.revents));  // POLL* and EPOLL* bits coincide
            ++ran;
        }
        return ran;
    }
    // Rounds until nothing is ready, at most max_rounds (a device whose fd stays readable
    // while it has nothing to do would spin a real event loop: with `must_settle` that is
    // a failure).
    void settle(int max_rounds, bool must_settle, int timeout_ms = 0) {
        for (int i = 0; i < max_rounds; ++i)
            if (dispatch(timeout_ms) == 0) return;
        check(!must_settle);
    }

private:
    struct Reg {
        uint32_t events;
        Callback cb;
    };
    std::map<int, Reg> regs_;
};

class CountingInterrupt final : public VirtioInterrupt {
public:
    explicit CountingInterrupt(uint16_t num_queues) : num_queues_(num_queues) {}
    void signal_queue(uint16_t q) override {
        check(q < num_queues_);  // a device only signals its own queues
        ++queue_signals;
    }
    void signal_config() override { ++config_signals; }
    uint64_t queue_signals = 0, config_signals = 0;

private:
    uint16_t num_queues_;
};

// Where one queue lives, as the input chose it.
struct QueueSpec {
    QueueConfig cfg;
};

// Reads a queue placement: u8 (size = 1 << (b & 15), disabled when bit 7 set), then the
// descriptor table, available and used ring addresses as u64.
inline QueueSpec read_queue_spec(Input& in) {
    uint8_t b = in.u8();
    QueueSpec q;
    q.cfg.size = static_cast<uint16_t>(1u << (b & 15));
    q.cfg.ready = (b & 0x80) == 0;
    q.cfg.desc = GuestAddress(in.u64());
    q.cfg.avail = GuestAddress(in.u64());
    q.cfg.used = GuestAddress(in.u64());
    return q;
}

// The driver side of one split queue, writing wherever the input put the rings; writes that
// miss guest RAM are dropped (a hostile driver may point rings anywhere). Buffers for
// chains come from a cursor that walks both RAM regions.
class FuzzDriver {
public:
    FuzzDriver(GuestMemory& mem, const QueueConfig& cfg) : mem_(mem), cfg_(cfg) {}

    // Op CHAIN: u8 shape (bits 0-2 readable count, 3-5 writable count, bit 6 indirect),
    // per readable part u16 length (& 0x3fff) then that many bytes, per writable part u16
    // length (& 0x3fff). `first`, when not empty, is an extra readable part in front (a
    // request header the target built from the input). Descriptors are taken round-robin
    // from the table; the head is published at once.
    void add_chain(Input& in, std::span<const uint8_t> first = {}) {
        uint8_t shape = in.u8();
        unsigned nr = shape & 7, nw = (shape >> 3) & 7;
        bool indirect = (shape & 0x40) != 0;
        std::vector<virtq::Desc> descs;
        auto readable = [&](std::span<const uint8_t> data) {
            uint64_t at = alloc(data.size());
            if (!data.empty()) (void)mem_.write(GuestAddress(at), data);
            descs.push_back(virtq::Desc{at, static_cast<uint32_t>(data.size()), 0, 0});
        };
        if (!first.empty()) readable(first);
        for (unsigned i = 0; i < nr; ++i) {
            std::vector<uint8_t> data(in.u16() & 0x3fff);
            in.bytes(data);
            readable(data);
        }
        for (unsigned i = 0; i < nw; ++i) {
            uint32_t len = in.u16() & 0x3fff;
            descs.push_back(virtq::Desc{alloc(len), len, virtq::kDescFWrite, 0});
        }
        publish_chain(descs, indirect);
    }

    // Op DESC: u16 index, then a raw 16-byte descriptor written at table[index % size].
    void raw_descriptor(Input& in) {
        uint16_t index = in.u16();
        virtq::Desc d{};
        in.bytes(std::span(reinterpret_cast<uint8_t*>(&d), sizeof d));
        if (cfg_.size) write_desc(static_cast<uint16_t>(index % cfg_.size), d);
    }
    // Op AVAIL: u16 head value (any, even >= size) published in the next avail slot.
    void raw_avail(Input& in) { push_avail(in.u16()); }
    // Op AVAIL_IDX: u16 written to avail->idx as is (jumps, wrap-arounds).
    void raw_avail_idx(Input& in) {
        avail_idx_ = in.u16();
        (void)mem_.write_obj(cfg_.avail + virtq::kAvailIdxOffset, avail_idx_);
    }
    // Op FLAGS: u16 avail flags, u16 used_event.
    void flags(Input& in) {
        uint16_t f = in.u16(), ev = in.u16();
        (void)mem_.write_obj(cfg_.avail + virtq::kAvailFlagsOffset, f);
        if (cfg_.size) (void)mem_.write_obj(cfg_.avail + virtq::avail_used_event_offset(cfg_.size), ev);
    }

private:
    uint64_t alloc(uint64_t len) {
        // 8-byte aligned, never straddling a region end; wraps at the end of high RAM.
        cursor_ = (cursor_ + 7) & ~uint64_t{7};
        if (cursor_ < kLowEnd && cursor_ + len > kLowEnd) cursor_ = kHighStart;
        if (cursor_ >= kHighStart && cursor_ + len > kHighEnd) cursor_ = kBufferStart;
        uint64_t at = cursor_;
        cursor_ += len;
        return at;
    }
    void write_desc(uint16_t index, const virtq::Desc& d) {
        (void)mem_.write_obj(cfg_.desc + uint64_t{index} * sizeof d, d);
    }
    void publish_chain(std::vector<virtq::Desc>& descs, bool indirect) {
        if (descs.empty() || cfg_.size == 0) return;
        for (size_t i = 0; i + 1 < descs.size(); ++i) descs[i].flags |= virtq::kDescFNext;
        if (indirect) {
            for (size_t i = 0; i + 1 < descs.size(); ++i) descs[i].next = static_cast<uint16_t>(i + 1);
            uint64_t bytes = descs.size() * sizeof(virtq::Desc);
            uint64_t at = alloc(bytes);
            (void)mem_.write(GuestAddress(at),
                             std::span(reinterpret_cast<const uint8_t*>(descs.data()), bytes));
            uint16_t head = next_index();
            write_desc(head, virtq::Desc{at, static_cast<uint32_t>(bytes), virtq::kDescFIndirect, 0});
            return push_avail(head);
        }
        std::vector<uint16_t> idx;
        for (size_t i = 0; i < descs.size(); ++i) idx.push_back(next_index());
        for (size_t i = 0; i < descs.size(); ++i) {
            if (i + 1 < descs.size()) descs[i].next = idx[i + 1];
            write_desc(idx[i], descs[i]);
        }
        push_avail(idx[0]);
    }
    uint16_t next_index() {
        uint16_t i = static_cast<uint16_t>(next_desc_ % cfg_.size);
        ++next_desc_;
        return i;
    }
    void push_avail(uint16_t head) {
        if (cfg_.size == 0) return;
        uint64_t slot = avail_idx_ % cfg_.size;
        (void)mem_.write_obj(cfg_.avail + virtq::kAvailRingOffset + 2 * slot, head);
        ++avail_idx_;
        (void)mem_.write_obj(cfg_.avail + virtq::kAvailIdxOffset, avail_idx_);
    }

    static constexpr uint64_t kBufferStart = 0x10000;
    GuestMemory& mem_;
    QueueConfig cfg_;
    uint16_t avail_idx_ = 0;
    uint32_t next_desc_ = 0;
    uint64_t cursor_ = kBufferStart;
};

// A copy of all guest RAM, to show a device left it alone. memcpy/memcmp rather than a
// loop (this file is coverage-instrumented: a per-word loop costs milliseconds), into one
// buffer reused by every input (a fresh 576 KiB allocation page-faults each time).
class MemorySnapshot {
public:
    explicit MemorySnapshot(const GuestMemory& mem) : mem_(mem) {
        size_t at = 0;
        for (const auto& r : mem.regions()) {
            if (buffer().size() < at + r.size()) buffer().resize(at + r.size());
            std::memcpy(buffer().data() + at, r.host_base(), r.size());
            at += r.size();
        }
    }
    bool unchanged() const {
        size_t at = 0;
        for (const auto& r : mem_.regions()) {
            if (std::memcmp(buffer().data() + at, r.host_base(), r.size()) != 0) return false;
            at += r.size();
        }
        return true;
    }

private:
    static std::vector<uint8_t>& buffer() {
        static std::vector<uint8_t> b;
        return b;
    }
    const GuestMemory& mem_;
};

// Op MEM: u32 address, u8 length, bytes: a raw write into guest RAM (dropped when it misses),
// for whatever the structured ops cannot reach (rewritten descriptors, used rings, ...).
inline void raw_memory_write(GuestMemory& mem, Input& in) {
    uint32_t addr = in.u32();
    std::vector<uint8_t> data(in.u8());
    in.bytes(data);
    if (!data.empty()) (void)mem.write(GuestAddress(addr), data);
}

}  // namespace kestrel::fuzz
