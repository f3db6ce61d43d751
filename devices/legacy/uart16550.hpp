// Uart16550: a National Semiconductor PC16550D-compatible UART (the "16550A" Linux's 8250
// driver detects), as on COM1. Registers at offsets 0..7 of its port base; see the PC16550D
// datasheet, §8 "Registers" (Table II register summary) and §8.6 "Interrupt Identification".
//
// Transmit is instantaneous from the guest's view: a byte written to THR is appended to a
// bounded SerialTxBuffer at once, so LSR.THRE and LSR.TEMT always read 1 and the THRE
// interrupt re-arms with every write. The UART never does host I/O: vmm/serial_sink.* writes
// the buffer out on the event loop. A slow or stuck reader therefore never slows the guest or
// holds a vCPU (Linux's console write polls THRE for up to 10 ms a character, so flow control
// through THRE would turn a stuck reader into a stuck guest); what the buffer cannot hold is
// dropped and counted there. Bytes keep the order the guest wrote them in.
//
// Receive: a 64-byte RX FIFO (1 byte, the RBR, while FIFOs are disabled) fed from a bounded
// backlog of kRxBacklogCapacity bytes that stands for "still on the wire". enqueue_input()
// never overruns the FIFO: it accepts what fits into FIFO + backlog and returns that count;
// the caller keeps (or drops) the rest and may retry after on_rx_drained fires.
//
// Modem lines: outside loopback, MSR reports DCD, DSR and CTS asserted (a cable with a
// ready peer). OUT2 does not gate the interrupt (unlike a PC's board wiring) so guests that
// never set OUT2 still get interrupts; Linux sets OUT2 anyway.
//
// Threads: read()/write() from vCPU threads, enqueue_input() from the event loop. All state is
// behind one mutex; InterruptLine::set_level is called with that mutex held (so levels are
// never applied out of order) and therefore must not call back into this device. Transmitted
// bytes are pushed with that mutex held too, which keeps their order across vCPUs.
// on_rx_drained is called with no lock held.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <vector>

#include "devices/bus_device.hpp"
#include "devices/interrupt.hpp"
#include "devices/legacy/serial_tx_buffer.hpp"
#include "vmm/base/error.hpp"

namespace kestrel {

class Uart16550 final : public BusDevice {
public:
    static constexpr uint64_t kMappingLength = 8;  // at x86::kCom1Port, IRQ x86::kCom1Irq
    static constexpr size_t kRxFifoSize = 64;
    // Enough for a pasted screenful; beyond it input is refused rather than silently lost.
    static constexpr size_t kRxBacklogCapacity = 4096;

    // tx receives the transmitted bytes (nullptr discards them). on_rx_drained (optional)
    // runs when the guest has read everything after enqueue_input() refused bytes.
    Uart16550(std::shared_ptr<InterruptLine> irq, std::shared_ptr<SerialTxBuffer> tx,
              std::function<void()> on_rx_drained = {});

    void read(uint64_t offset, std::span<uint8_t> data) override;
    void write(uint64_t offset, std::span<const uint8_t> data) override;

    // Host input towards the guest. Returns how many leading bytes were accepted (all of them
    // unless FIFO + backlog are full).
    size_t enqueue_input(std::span<const uint8_t> bytes);

    // The UART's guest-visible state, for snapshots and live migration: every register the
    // guest can read or that decides what it reads next (PC16550D §8, Table II): IER, LCR,
    // MCR, the FCR's enable and trigger bits, the pending LSR error bits and MSR delta bits
    // (both cleared by the guest's read), SCR, the divisor latch, whether the THRE interrupt
    // is armed, the RX FIFO (RBR when FIFOs are off) and the backlog of input still "on the
    // wire". IIR, LSR's DR/THRE/TEMT and MSR's line bits are not stored: they follow from the
    // above.
    // Deliberately not held (host wiring, kept by the restoring device): the interrupt line
    // and the level last given to it (re-derived by restore()), the transmit buffer (bytes
    // already transmitted belong to the host's sink), on_rx_drained and whether input was
    // refused (that is the restoring host's own input source's business).
    struct State {
        uint8_t ier = 0;
        uint8_t lcr = 0;
        uint8_t mcr = 0;
        uint8_t fcr = 0;             // FIFO enable + RX trigger bits only
        uint8_t lsr_errors = 0;      // OE/PE/FE/BI
        uint8_t msr_deltas = 0;      // DCTS/DDSR/TERI/DDCD
        uint8_t scr = 0;
        uint8_t dll = 0;
        uint8_t dlm = 0;
        bool thre_pending = false;
        std::vector<uint8_t> rx_fifo;     // oldest first; at most kRxFifoSize (1 with FIFOs off)
        std::vector<uint8_t> rx_backlog;  // oldest first; at most kRxBacklogCapacity

        bool operator==(const State&) const = default;
    };
    State save() const;
    // Replaces the state with `s` after checking every bounded field (a snapshot file may be
    // hostile); on error nothing changes. Then drives the interrupt line to match.
    Result<void> restore(const State& s);

private:
    uint8_t read_register(uint64_t offset);                          // state_mutex_ held
    std::optional<uint8_t> write_register(uint64_t offset, uint8_t value);  // returns a byte to send
    void write_fcr(uint8_t value);
    void write_mcr(uint8_t value);
    void receive_into_fifo(uint8_t byte);
    void refill_fifo_from_backlog();
    size_t fifo_capacity() const;
    bool fifo_enabled() const;
    uint8_t modem_status_lines() const;
    uint8_t interrupt_identification() const;
    void update_interrupt();

    std::shared_ptr<InterruptLine> irq_;
    const std::shared_ptr<SerialTxBuffer> tx_;
    const std::function<void()> on_rx_drained_;

    mutable std::mutex state_mutex_;
    std::deque<uint8_t> rx_fifo_;
    std::deque<uint8_t> rx_backlog_;
    bool rx_refused_ = false;     // enqueue_input() turned bytes away since the last drain
    bool thre_pending_ = false;   // the THR-empty interrupt is armed (cleared by IIR read)
    bool irq_level_ = false;      // last level given to irq_
    uint8_t ier_ = 0;
    uint8_t lcr_ = 0;
    uint8_t mcr_ = 0;
    uint8_t fcr_ = 0;             // enable + trigger bits only; the clear bits self-clear
    uint8_t lsr_errors_ = 0;      // OE/PE/FE/BI, cleared by reading LSR
    uint8_t msr_deltas_ = 0;      // DCTS/DDSR/TERI/DDCD, cleared by reading MSR
    uint8_t scr_ = 0;
    uint8_t dll_ = 0x0c;          // 9600 baud at 1.8432 MHz, what PC firmware leaves behind
    uint8_t dlm_ = 0;
};

}  // namespace kestrel
