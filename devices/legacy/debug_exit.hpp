// DebugExit: a write-only port that ends the VM with a code chosen by the guest, for
// test guests (QEMU's isa-debug-exit at the same port, x86::kDebugExitPort). The code
// is the written value (little-endian, 1/2/4 bytes) unchanged; any (v << 1) | 1 process
// exit-status convention is the caller's business. Reads return 0.
// Stateless, so no lock; on_exit runs on the writing vCPU's thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <span>

#include "devices/bus_device.hpp"

namespace kestrel {

class DebugExit final : public BusDevice {
public:
    static constexpr uint64_t kMappingLength = 1;  // at x86::kDebugExitPort

    explicit DebugExit(std::function<void(uint32_t code)> on_exit) : on_exit_(std::move(on_exit)) {}

    void read(uint64_t, std::span<uint8_t> data) override {
        for (auto& b : data) b = 0;
    }

    void write(uint64_t, std::span<const uint8_t> data) override {
        uint32_t code = 0;
        // Bytes past 4 (an 8-byte MMIO-style access) cannot be part of a port value.
        for (size_t i = 0; i < data.size() && i < sizeof(code); ++i) code |= uint32_t{data[i]} << (8 * i);
        if (on_exit_) on_exit_(code);
    }

private:
    const std::function<void(uint32_t)> on_exit_;
};

}  // namespace kestrel
