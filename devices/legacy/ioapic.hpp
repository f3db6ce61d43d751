// I/O APIC (Intel 82093AA, version 0x11, 24 pins) for KVM's split irqchip: the local APICs
// stay in the kernel, this model turns pin changes into MSI messages (SDM vol. 3A §10.11
// message format). It exists because the in-kernel PIC+IOAPIC cost every VM 4-10 ms of
// start-up on the measured host (KVM_CREATE_IRQCHIP leaves SRCU work that the first memory
// slot then waits for); Linux under HW-reduced ACPI needs no 8259 at all.
//
// Registers (82093AA datasheet §3): IOREGSEL at +0x00, IOWIN at +0x10; indirect registers
// 0x00 ID, 0x01 version, 0x02 arbitration, 0x10 + 2n / 0x11 + 2n redirection entry n.
// Edge pins deliver on a rising edge (held in IRR while masked, delivered on unmask). Level
// pins deliver while asserted unless Remote IRR is set; the VMM calls end_of_interrupt() when
// the guest's local APIC EOIs the vector (KVM_EXIT_IOAPIC_EOI), and switching an entry to
// edge clears Remote IRR (what Linux does for version 0x11 parts). Polarity is recorded but
// not applied: devices assert their line logically.
//
// Threads: vCPUs (MMIO, device pins) and the event loop (device pins) call in; one mutex.
// The sink is called with it held and must not call back.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <mutex>

#include "devices/bus_device.hpp"
#include "devices/interrupt.hpp"
#include "vmm/base/error.hpp"

namespace kestrel {

// Where the IOAPIC's messages go (the VMM: KVM routes and KVM_SIGNAL_MSI).
class IoApicSink {
public:
    virtual ~IoApicSink() = default;
    // Pin `pin`'s entry now stands for this message; the VMM tells KVM, which then knows the
    // level-triggered vectors whose EOI must come back to end_of_interrupt().
    virtual void route(uint8_t pin, uint64_t address, uint32_t data) = 0;
    virtual void deliver(uint64_t address, uint32_t data) = 0;
};

class IoApic final : public BusDevice {
public:
    static constexpr uint8_t kPins = 24;
    static constexpr uint64_t kMmioSize = 0x1000;

    explicit IoApic(std::shared_ptr<IoApicSink> sink);

    void read(uint64_t offset, std::span<uint8_t> data) override;
    void write(uint64_t offset, std::span<const uint8_t> data) override;

    void set_level(uint8_t pin, bool asserted);
    void end_of_interrupt(uint8_t vector);

    uint64_t redirection_entry(uint8_t pin) const;  // for tests

    // The IOAPIC's guest-visible state, for snapshots and live migration (82093AA §3): the
    // register select (IOREGSEL: all 8 bits are the guest's, an index past the table reads
    // 0, so any value is valid), the ID register, the 24 redirection entries with their
    // Remote IRR bits, and per pin the input level as the devices drive it (which decides
    // whether the next assertion is an edge) and IRR (an edge not yet delivered: held while
    // masked).
    // Deliberately not held: the sink and the messages last routed to it (host wiring: the
    // restoring device routes every entry to its own sink). The local APICs' side (a vector
    // in service whose EOI will clear Remote IRR) is the in-kernel LAPIC state, saved by KVM.
    struct State {
        uint8_t select = 0;
        uint32_t id = 0;                         // bits 24..27 only
        std::array<uint64_t, kPins> redirection{};
        std::array<bool, kPins> level{};
        std::array<bool, kPins> irr{};

        bool operator==(const State&) const = default;
    };
    State save() const;
    // Replaces the state with `s` after checking it (a snapshot file may be hostile): ID
    // reserved bits, each entry's reserved and delivery status bits, Remote IRR only on
    // level-triggered entries; on error nothing changes. Then routes every entry to the sink
    // and services every pin as set_level/end_of_interrupt would: an unmasked asserted level
    // pin without Remote IRR, or an unmasked pin with an edge in IRR, is delivered now.
    Result<void> restore(const State& s);

    // Redirection entry bits (82093AA §3.2.4).
    static constexpr uint64_t kVectorMask = 0xff;
    static constexpr uint64_t kDestModeLogical = 1ull << 11;
    static constexpr uint64_t kDeliveryStatus = 1ull << 12;
    static constexpr uint64_t kRemoteIrr = 1ull << 14;
    static constexpr uint64_t kLevelTriggered = 1ull << 15;
    static constexpr uint64_t kMasked = 1ull << 16;

private:
    uint32_t read_register_locked(uint8_t index) const;
    void write_register_locked(uint8_t index, uint32_t value);
    void service_locked(uint8_t pin);
    void reconfigure_locked(uint8_t pin);

    std::shared_ptr<IoApicSink> sink_;
    mutable std::mutex mu_;
    uint8_t select_ = 0;
    uint32_t id_ = 0;
    std::array<uint64_t, kPins> rte_{};
    std::array<bool, kPins> level_{};    // the line as the device drives it
    std::array<bool, kPins> pending_{};  // IRR: an edge (or level) not yet delivered
    std::array<uint64_t, kPins> message_{};  // (address << 32 | data) of each entry, as routed
};

// An InterruptLine wired to one pin of `ioapic`, for devices.
std::shared_ptr<InterruptLine> ioapic_line(std::shared_ptr<IoApic> ioapic, uint8_t pin);

}  // namespace kestrel
