// SerialTxBuffer: the bytes a UART has transmitted that the host has not written out yet.
// A bounded byte ring between one producer that must never wait (the UART, on vCPU threads)
// and one consumer that does the host I/O (vmm/serial_sink.*, on the event loop or its
// writer thread).
//
// push() never blocks and never does I/O: what does not fit is dropped and counted, and the
// first drop is logged once (warning). The consumer takes bytes from the front in order
// (peek, then pop or drop), so the bytes that do go out keep the guest's order; a gap is
// only ever bytes that were dropped.
//
// Wake-ups: on_data runs (producer thread, no lock held) when push() adds bytes while the
// consumer is not already due to come: armed initially and re-armed whenever peek() finds
// the buffer empty. One wake-up per batch, not per byte; the consumer drains until empty.
// on_data must not block and must not call back into the buffer.
//
// close() ends it: pending bytes become dropped, later pushes are dropped, and pop/drop by a
// consumer still in the middle of a write change nothing (they were already counted).
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <mutex>
#include <span>
#include <string_view>
#include <vector>

namespace kestrel {

class SerialTxBuffer {
public:
    // Over five seconds of a 115200-baud line (11.5 KB/s), so a reader that is merely slow
    // for a moment loses nothing; small enough that a reader that never comes costs little.
    static constexpr size_t kDefaultCapacity = 64 * 1024;

    explicit SerialTxBuffer(size_t capacity = kDefaultCapacity, std::function<void()> on_data = {});
    SerialTxBuffer(const SerialTxBuffer&) = delete;
    SerialTxBuffer& operator=(const SerialTxBuffer&) = delete;

    // Producer. Appends what fits; returns how many leading bytes were taken.
    size_t push(std::span<const uint8_t> bytes);

    // Consumer. Copies up to out.size() bytes from the front without removing them; 0 means
    // empty (and arms the next wake-up).
    size_t peek(std::span<uint8_t> out);
    // Removes n bytes from the front: written out (pop), or lost to a write error (drop;
    // `why` names it in the first-drop warning).
    void pop(size_t n);
    void drop(size_t n, std::string_view why);
    // Drops everything pending and everything pushed later. Returns how many were pending.
    size_t close();

    size_t size() const;
    size_t capacity() const { return ring_.size(); }
    // All bytes lost so far: no room, write errors, pending at close().
    uint64_t dropped() const { return dropped_.load(std::memory_order_relaxed); }
    // All bytes the consumer wrote out (pop) so far.
    uint64_t written() const { return written_.load(std::memory_order_relaxed); }

private:
    void remove_front(size_t n);                          // mu_ held
    void count_dropped(uint64_t n, std::string_view why);  // mu_ held

    const std::function<void()> on_data_;
    mutable std::mutex mu_;
    std::vector<uint8_t> ring_;
    size_t head_ = 0;   // index of the oldest byte
    size_t size_ = 0;
    bool wake_armed_ = true;
    bool closed_ = false;
    std::atomic<uint64_t> dropped_{0};
    std::atomic<uint64_t> written_{0};
};

}  // namespace kestrel
