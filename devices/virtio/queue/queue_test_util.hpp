// Shared set-up for the virtqueue tests: a small guest RAM (two regions with a hole) with a
// mock driver's queue in it.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <span>
#include <variant>
#include <vector>

#include "devices/event_registry.hpp"
#include "devices/virtio/queue/mock_driver.hpp"
#include "devices/virtio/queue/split_queue.hpp"
#include "devices/virtio/queue/virtq_spec.hpp"
#include "devices/virtio/virtio_device.hpp"
#include "vmm/memory/guest_memory.hpp"

namespace kestrel::test {

// RAM: [0, 1 MiB) and [2 MiB, 2 MiB + 64 KiB); everything else is a hole.
inline constexpr uint64_t kRamLowEnd = 0x100000;
inline constexpr uint64_t kRamHighStart = 0x200000;
inline constexpr uint64_t kRamHighEnd = 0x210000;
inline constexpr uint64_t kQueueArea = 0x10000;
inline constexpr uint64_t kQueueAreaSize = 0x80000;

inline GuestMemory make_test_memory() {
    std::array specs{GuestRegionSpec{GuestAddress(0), kRamLowEnd},
                     GuestRegionSpec{GuestAddress(kRamHighStart), kRamHighEnd - kRamHighStart}};
    auto mem = GuestMemory::create(specs);
    if (!mem) std::abort();
    return std::move(*mem);
}

inline constexpr uint64_t kAllRingFeatures =
    virtq::kFeatureVersion1 | virtq::kFeatureEventIdx | virtq::kFeatureIndirectDesc;

inline std::span<const uint8_t> bytes(const std::vector<uint8_t>& v) { return v; }

// A device's interrupts, recorded: which queues it signalled, and config changes.
struct CountingInterrupt : VirtioInterrupt {
    std::vector<uint16_t> queue_signals;
    int config_signals = 0;
    void signal_queue(uint16_t q) override { queue_signals.push_back(q); }
    void signal_config() override { ++config_signals; }
};

// An event registry for devices that register nothing (or whose fds a test drives itself).
struct NullEvents : EventRegistry {
    Result<void> add(int, uint32_t, Callback) override { return {}; }
    Result<void> remove(int) override { return {}; }
};

}  // namespace kestrel::test
