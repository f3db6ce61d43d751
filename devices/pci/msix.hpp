// MSI-X (PCI Local Bus 3.0 §6.8.2): the capability's register layout, the vector table and
// pending bit array a function exposes in one of its BARs, and delivery rules (mask, pending,
// unmask-delivers). Message delivery itself is the VMM's business, behind MsiSink (it maps
// vectors to KVM GSI routes and irqfds), so devices/ never sees KVM.
//
// Threads: vCPUs access the table and change the control bits while the event-loop thread
// calls notify(); one mutex guards it all, and MsiSink is called with that mutex held (so a
// vector masked by one vCPU is never fired afterwards by another thread). MsiSink must not
// call back into the MsixTable.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <vector>

#include "vmm/base/error.hpp"

namespace kestrel {

class MsiSink {
public:
    virtual ~MsiSink() = default;
    // The guest programmed `vector` with this message (§6.8.2.8). Called when the vector is
    // unmasked and its address/data differ from what was last configured.
    virtual void configure(uint16_t vector, uint64_t address, uint32_t data) = 0;
    // Deliver the last configured message of `vector`.
    virtual void fire(uint16_t vector) = 0;
};

namespace msix {
inline constexpr uint8_t kCapabilityId = 0x11;              // PCI 3.0 appendix H
inline constexpr uint16_t kMaxVectors = 2048;               // table size field is 11 bits
inline constexpr uint64_t kEntrySize = 16;                  // §6.8.2.6
inline constexpr uint16_t kControlTableSizeMask = 0x07ff;   // message control (§6.8.2.3)
inline constexpr uint16_t kControlFunctionMask = 1 << 14;
inline constexpr uint16_t kControlEnable = 1 << 15;
inline constexpr uint32_t kVectorControlMask = 1;           // vector control bit 0 (§6.8.2.9)

// Capability bytes after the ID and next pointer (§6.8.2.1): message control (+2), table
// offset/BIR (+4), PBA offset/BIR (+8); offsets are relative to the capability start.
inline constexpr uint16_t kMessageControlOffset = 2;
inline constexpr size_t kBodySize = 10;
std::array<uint8_t, kBodySize> capability_body(uint16_t num_vectors, uint8_t table_bar,
                                               uint32_t table_offset, uint8_t pba_bar,
                                               uint32_t pba_offset);
// Only the function mask and enable bits are writable.
std::array<uint8_t, kBodySize> capability_writable();
}  // namespace msix

class MsixTable {
public:
    // num_vectors in [1, msix::kMaxVectors] (clamped).
    MsixTable(uint16_t num_vectors, std::shared_ptr<MsiSink> sink);

    uint16_t num_vectors() const { return num_vectors_; }
    uint64_t table_bytes() const { return uint64_t{num_vectors_} * msix::kEntrySize; }
    uint64_t pba_bytes() const { return (uint64_t{num_vectors_} + 63) / 64 * 8; }

    // The message control word the guest left in config space (enable, function mask).
    void set_control(uint16_t message_control);

    // Offsets relative to the table / PBA start. Accesses must be 4 or 8 bytes, naturally
    // aligned and inside; others read as zero and are dropped (§6.8.2: software uses
    // DWORD or QWORD accesses).
    void table_read(uint64_t offset, std::span<uint8_t> data);
    void table_write(uint64_t offset, std::span<const uint8_t> data);
    void pba_read(uint64_t offset, std::span<uint8_t> data);  // the PBA is read-only

    // Raise `vector`: fired when deliverable, otherwise left pending in the PBA.
    void notify(uint16_t vector);

    bool enabled() const;
    bool pending(uint16_t vector) const;

    // The guest-visible table and PBA (snapshots). enable / function mask live in the
    // capability's message control word, which the owner restores with config space.
    struct VectorState {
        uint32_t address_lo = 0, address_hi = 0, data = 0, control = msix::kVectorControlMask;
        bool operator==(const VectorState&) const = default;
    };
    struct State {
        std::vector<VectorState> vectors;  // num_vectors() of them
        std::vector<uint64_t> pending;     // pba_bytes() / 8 words
        bool operator==(const State&) const = default;
    };
    State save() const;
    // What restore() refuses: a state of another size, address_lo bits 1:0 or reserved
    // vector control bits set, pending bits past the last vector.
    Result<void> check(const State& s) const;
    // Refuses (changing nothing) what check() refuses. Then applies
    // `message_control` as set_control does: unmasked vectors are configured with the sink
    // and pending ones that are deliverable fire.
    Result<void> restore(const State& s, uint16_t message_control);

private:
    struct Entry {
        uint32_t address_lo = 0, address_hi = 0, data = 0;
        uint32_t control = msix::kVectorControlMask;  // masked after reset (§6.8.2.9)
        bool configured = false;
        uint64_t configured_address = 0;
        uint32_t configured_data = 0;
    };

    bool masked(const Entry& e) const;  // mutex_ held
    void write_dword(uint16_t vector, unsigned field, uint32_t value);
    void sync_configuration(uint16_t vector);
    void deliver_pending();

    const uint16_t num_vectors_;
    const std::shared_ptr<MsiSink> sink_;
    mutable std::mutex mutex_;
    bool enabled_ = false;
    bool function_masked_ = false;
    std::vector<Entry> entries_;
    std::vector<uint64_t> pending_;
};

}  // namespace kestrel
