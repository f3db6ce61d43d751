// VirtioDevice: what a virtio device type (blk, net, vsock, rng) implements, independent of
// the transport (virtio 1.2 §2 "Basic Facilities", §4.1 PCI transport drives it).
// Threading: config accesses and status changes come from vCPU threads; queue_notify and
// back-end completions run on the event-loop thread. Implementations guard their state.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "devices/metrics.hpp"
#include "vmm/base/error.hpp"
#include "vmm/memory/guest_memory.hpp"

namespace kestrel {

class EventRegistry;

// How far the device had got in one virtqueue when a snapshot was taken, with nothing in
// flight: every chain before next_avail was completed (used idx == next_avail), and the ones
// the device had popped but not started were handed back (they are popped again after the
// restore). signalled_used is §2.7.10's "used idx at the last notification decision".
struct QueuePosition {
    uint16_t next_avail = 0;
    uint16_t signalled_used = 0;
    bool signalled_used_valid = false;

    bool operator==(const QueuePosition&) const = default;
};

// Where the driver put one virtqueue (virtio 1.2 §2.7 split virtqueues), as the transport
// collected it from the common configuration; validated by the device on activation.
struct QueueConfig {
    uint16_t size = 0;     // number of descriptors, a power of 2 <= max_queue_size
    bool ready = false;    // queue_enable
    GuestAddress desc, avail, used;
    // A restored device continues from here (SplitQueue::create takes it); nullopt: from 0.
    std::optional<QueuePosition> position = std::nullopt;
};

// One position per virtqueue (index = queue number); nullopt for a queue not enabled.
using QueuePositions = std::vector<std::optional<QueuePosition>>;

// Raised by the device when it has put buffers in a used ring (or changed its config);
// the transport maps it to MSI-X vectors (or INTx + ISR).
class VirtioInterrupt {
public:
    virtual ~VirtioInterrupt() = default;
    virtual void signal_queue(uint16_t queue_index) = 0;
    virtual void signal_config() = 0;
};

struct ActivateContext {
    GuestMemory& mem;
    uint64_t acked_features;            // what the driver accepted (FEATURES_OK)
    std::vector<QueueConfig> queues;    // index = virtqueue number
    VirtioInterrupt& interrupt;
    EventRegistry& events;
};

class VirtioDevice {
public:
    virtual ~VirtioDevice() = default;
    virtual uint16_t device_type() const = 0;          // §5: 2 blk, 1 net, 19 vsock, 4 rng
    virtual uint64_t device_features() const = 0;      // includes VIRTIO_F_VERSION_1 etc.
    virtual uint16_t num_queues() const = 0;
    virtual uint16_t max_queue_size() const = 0;
    // Device-specific configuration space (§4.1.4.6), offset relative to its start.
    virtual void read_config(uint64_t offset, std::span<uint8_t> data) = 0;
    virtual void write_config(uint64_t offset, std::span<const uint8_t> data) = 0;
    // DRIVER_OK: start using the queues. An error puts the device in DEVICE_NEEDS_RESET.
    virtual Result<void> activate(ActivateContext ctx) = 0;
    // The driver notified queue `index` (§4.1.5.2); called on the event-loop thread.
    virtual void queue_notify(uint16_t index) = 0;
    // Device reset (§2.4): stop using guest memory, forget queues, drop in-flight work
    // only after it has completed (quiesce), return to the pre-activation state.
    virtual void reset() = 0;
    // True once a malformed request made the device give up (transport sets NEEDS_RESET).
    virtual bool needs_reset() const { return false; }
    // The device's counters (any thread; devices/metrics.hpp).
    virtual void visit_metrics(MetricVisitor&) const {}
    // Pause (called on the event-loop thread, which parks right after): wait at most `limit`
    // until no host I/O the device started can still write guest memory. Completions stay
    // unprocessed (not on the used ring, no interrupt) until the loop runs again on resume.
    // Devices whose host I/O lands in host buffers first (net, vsock, rng) have nothing to do.
    virtual Result<void> finish_host_io(std::chrono::milliseconds /*limit*/) { return {}; }
    // Snapshot of an activated device on a paused VM (after finish_host_io; the event loop is
    // parked, so this runs on the controller's thread): completions of host I/O that has
    // finished go to the used rings now (and their interrupts to the guest), and each queue's
    // position is reported as if the chains popped but not started had never been popped —
    // the device itself keeps them and serves them if this VM resumes. Refused when a request
    // is still in host I/O, or by a device whose state cannot be saved.
    virtual Result<QueuePositions> settle_queues() {
        return fail("virtio device type {}: its state cannot be saved", device_type());
    }
};

}  // namespace kestrel
