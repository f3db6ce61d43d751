#include "devices/legacy/serial_tx_buffer.hpp"

#include <algorithm>
#include <cstring>

#include "vmm/base/log.hpp"

namespace kestrel {

SerialTxBuffer::SerialTxBuffer(size_t capacity, std::function<void()> on_data)
    : on_data_(std::move(on_data)), ring_(std::max<size_t>(capacity, 1)) {}

size_t SerialTxBuffer::push(std::span<const uint8_t> bytes) {
    size_t taken = 0;
    bool wake = false;
    {
        std::lock_guard lk(mu_);
        if (!closed_) {
            taken = std::min(bytes.size(), ring_.size() - size_);
            size_t tail = (head_ + size_) % ring_.size();
            const size_t first = std::min(taken, ring_.size() - tail);
            std::memcpy(ring_.data() + tail, bytes.data(), first);
            std::memcpy(ring_.data(), bytes.data() + first, taken - first);
            size_ += taken;
            if (taken > 0 && wake_armed_) {
                wake_armed_ = false;
                wake = true;
            }
        }
        if (taken < bytes.size())
            count_dropped(bytes.size() - taken,
                          "its reader is not keeping up; what does not fit the buffer is dropped");
    }
    // Outside the lock: the consumer's wake-up (an eventfd write) must not hold off pushes.
    if (wake && on_data_) on_data_();
    return taken;
}

size_t SerialTxBuffer::peek(std::span<uint8_t> out) {
    std::lock_guard lk(mu_);
    const size_t n = std::min(out.size(), size_);
    if (n == 0) {
        wake_armed_ = true;
        return 0;
    }
    const size_t first = std::min(n, ring_.size() - head_);
    std::memcpy(out.data(), ring_.data() + head_, first);
    std::memcpy(out.data() + first, ring_.data(), n - first);
    return n;
}

void SerialTxBuffer::pop(size_t n) {
    std::lock_guard lk(mu_);
    if (closed_) return;
    n = std::min(n, size_);
    remove_front(n);
    written_.fetch_add(n, std::memory_order_relaxed);
}

void SerialTxBuffer::drop(size_t n, std::string_view why) {
    std::lock_guard lk(mu_);
    if (closed_) return;  // close() has counted these bytes already
    n = std::min(n, size_);
    remove_front(n);
    count_dropped(n, why);
}

size_t SerialTxBuffer::close() {
    std::lock_guard lk(mu_);
    if (closed_) return 0;
    const size_t pending = size_;
    // Counted without the first-drop warning: the caller reports the total at exit.
    dropped_.fetch_add(pending, std::memory_order_relaxed);
    remove_front(pending);
    closed_ = true;
    return pending;
}

size_t SerialTxBuffer::size() const {
    std::lock_guard lk(mu_);
    return size_;
}

void SerialTxBuffer::remove_front(size_t n) {
    n = std::min(n, size_);
    head_ = (head_ + n) % ring_.size();
    size_ -= n;
}

void SerialTxBuffer::count_dropped(uint64_t n, std::string_view why) {
    if (n == 0) return;
    // Said once (a guest that prints without end would flood the log too), and under mu_ so
    // it never races close(), after which kestrel may be exiting.
    if (dropped_.fetch_add(n, std::memory_order_relaxed) == 0 && !closed_)
        log::warn("serial output: {} ({}-byte buffer; the total is logged at exit, --log-level "
                  "info)", why, ring_.size());
}

}  // namespace kestrel
