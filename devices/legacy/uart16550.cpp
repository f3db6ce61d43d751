#include "devices/legacy/uart16550.hpp"

#include "vmm/base/log.hpp"

namespace kestrel {

namespace {

// Register offsets, PC16550D datasheet Table II. DLAB (LCR bit 7) maps offsets 0/1 to the
// divisor latch instead of RBR/THR and IER.
enum class Reg : uint8_t {
    kData = 0,  // RBR (read) / THR (write); DLL when DLAB
    kIer = 1,   // DLM when DLAB
    kIirFcr = 2,
    kLcr = 3,
    kMcr = 4,
    kLsr = 5,
    kMsr = 6,
    kScr = 7,
};

// IER bits (§8.5).
constexpr uint8_t kIerRxData = 0x01;    // ERBFI
constexpr uint8_t kIerThrEmpty = 0x02;  // ETBEI
constexpr uint8_t kIerLineStatus = 0x04;
constexpr uint8_t kIerModemStatus = 0x08;
constexpr uint8_t kIerMask = 0x0f;      // bits 4..7 read 0 on a 16550 (Linux probes this)

// IIR values (§8.6, Table IV), highest priority first.
constexpr uint8_t kIirNoInterrupt = 0x01;
constexpr uint8_t kIirLineStatus = 0x06;
constexpr uint8_t kIirRxData = 0x04;
constexpr uint8_t kIirCharTimeout = 0x0c;
constexpr uint8_t kIirThrEmpty = 0x02;
constexpr uint8_t kIirModemStatus = 0x00;
constexpr uint8_t kIirFifosEnabled = 0xc0;

// FCR bits (§8.4).
constexpr uint8_t kFcrEnable = 0x01;
constexpr uint8_t kFcrClearRx = 0x02;
constexpr uint8_t kFcrTriggerMask = 0xc0;

constexpr uint8_t kLcrDlab = 0x80;

// MCR bits (§8.9).
constexpr uint8_t kMcrDtr = 0x01;
constexpr uint8_t kMcrRts = 0x02;
constexpr uint8_t kMcrOut1 = 0x04;
constexpr uint8_t kMcrOut2 = 0x08;
constexpr uint8_t kMcrLoop = 0x10;
constexpr uint8_t kMcrMask = 0x1f;

// LSR bits (§8.7).
constexpr uint8_t kLsrDataReady = 0x01;
constexpr uint8_t kLsrOverrun = 0x02;
constexpr uint8_t kLsrErrorMask = 0x1e;  // OE, PE, FE, BI: the bits a read of LSR clears
constexpr uint8_t kLsrThrEmpty = 0x20;
constexpr uint8_t kLsrTransmitterEmpty = 0x40;

// MSR bits (§8.10): deltas in the low nibble, line states in the high one.
constexpr uint8_t kMsrDcts = 0x01;
constexpr uint8_t kMsrDdsr = 0x02;
constexpr uint8_t kMsrTeri = 0x04;
constexpr uint8_t kMsrDdcd = 0x08;
constexpr uint8_t kMsrCts = 0x10;
constexpr uint8_t kMsrDsr = 0x20;
constexpr uint8_t kMsrRi = 0x40;
constexpr uint8_t kMsrDcd = 0x80;
constexpr uint8_t kMsrDeltaMask = 0x0f;

}  // namespace

Uart16550::Uart16550(std::shared_ptr<InterruptLine> irq, std::shared_ptr<SerialTxBuffer> tx,
                     std::function<void()> on_rx_drained)
    : irq_(std::move(irq)), tx_(std::move(tx)), on_rx_drained_(std::move(on_rx_drained)) {}

void Uart16550::read(uint64_t offset, std::span<uint8_t> data) {
    bool drained = false;
    {
        std::lock_guard lock(state_mutex_);
        // A wide access covers consecutive registers, as the ISA bus would split it.
        for (size_t i = 0; i < data.size(); ++i) data[i] = read_register(offset + i);
        if (rx_refused_ && rx_fifo_.empty() && rx_backlog_.empty()) {
            rx_refused_ = false;
            drained = true;
        }
    }
    if (drained && on_rx_drained_) on_rx_drained_();
}

void Uart16550::write(uint64_t offset, std::span<const uint8_t> data) {
    std::lock_guard lock(state_mutex_);
    for (size_t i = 0; i < data.size(); ++i) {
        // Never blocks: SerialTxBuffer::push drops what does not fit.
        if (auto tx = write_register(offset + i, data[i]); tx && tx_) tx_->push(std::span(&*tx, 1));
    }
}

size_t Uart16550::enqueue_input(std::span<const uint8_t> bytes) {
    std::lock_guard lock(state_mutex_);
    size_t accepted = 0;
    for (uint8_t b : bytes) {
        const bool loop = (mcr_ & kMcrLoop) != 0;
        // In loopback the receiver is wired to the transmitter, so wire input waits.
        if (!loop && rx_backlog_.empty() && rx_fifo_.size() < fifo_capacity()) {
            rx_fifo_.push_back(b);
        } else if (rx_backlog_.size() < kRxBacklogCapacity) {
            rx_backlog_.push_back(b);
        } else {
            rx_refused_ = true;
            break;
        }
        ++accepted;
    }
    update_interrupt();
    return accepted;
}

Uart16550::State Uart16550::save() const {
    std::lock_guard lock(state_mutex_);
    return State{
        .ier = ier_,
        .lcr = lcr_,
        .mcr = mcr_,
        .fcr = fcr_,
        .lsr_errors = lsr_errors_,
        .msr_deltas = msr_deltas_,
        .scr = scr_,
        .dll = dll_,
        .dlm = dlm_,
        .thre_pending = thre_pending_,
        .rx_fifo = {rx_fifo_.begin(), rx_fifo_.end()},
        .rx_backlog = {rx_backlog_.begin(), rx_backlog_.end()},
    };
}

namespace {

// Every bit the UART itself could never have stored is refused, so a restored device is one
// the guest could have produced by register writes and input.
Result<void> validate(const Uart16550::State& s) {
    if (s.ier & ~kIerMask) return bad_request("uart: ier {:#04x} has reserved bits 4..7 set", s.ier);
    if (s.mcr & ~kMcrMask) return bad_request("uart: mcr {:#04x} has reserved bits 5..7 set", s.mcr);
    if (s.fcr & ~(kFcrEnable | kFcrTriggerMask))
        return bad_request("uart: fcr {:#04x} has bits other than FIFO enable and RX trigger set", s.fcr);
    if (!(s.fcr & kFcrEnable) && s.fcr != 0)
        return bad_request("uart: fcr {:#04x} has an RX trigger level with the FIFOs off (§8.4: "
                           "FCR0 must be set for the other bits to take effect)", s.fcr);
    if (s.lsr_errors & ~kLsrErrorMask)
        return bad_request("uart: lsr_errors {:#04x} has bits other than OE/PE/FE/BI set", s.lsr_errors);
    if (s.msr_deltas & ~kMsrDeltaMask)
        return bad_request("uart: msr_deltas {:#04x} has bits other than DCTS/DDSR/TERI/DDCD set", s.msr_deltas);
    const size_t capacity = (s.fcr & kFcrEnable) ? Uart16550::kRxFifoSize : 1;
    if (s.rx_fifo.size() > capacity)
        return bad_request("uart: rx_fifo holds {} bytes, more than its {}{}", s.rx_fifo.size(), capacity,
                           capacity == 1 ? " (FIFOs off: the RBR alone)" : "");
    if (s.rx_backlog.size() > Uart16550::kRxBacklogCapacity)
        return bad_request("uart: rx_backlog holds {} bytes, more than its {}", s.rx_backlog.size(),
                           Uart16550::kRxBacklogCapacity);
    // Outside loopback the FIFO always takes from the backlog first, so a backlog next to a
    // FIFO with room is a state the UART never leaves behind (and the guest would never see
    // those bytes until some later read).
    if (!(s.mcr & kMcrLoop) && !s.rx_backlog.empty() && s.rx_fifo.size() < capacity)
        return bad_request("uart: rx_backlog holds {} bytes while rx_fifo has room ({} of {}) outside loopback",
                           s.rx_backlog.size(), s.rx_fifo.size(), capacity);
    return {};
}

}  // namespace

Result<void> Uart16550::restore(const State& s) {
    std::lock_guard lock(state_mutex_);
    TRY(validate(s));
    ier_ = s.ier;
    lcr_ = s.lcr;
    mcr_ = s.mcr;
    fcr_ = s.fcr;
    lsr_errors_ = s.lsr_errors;
    msr_deltas_ = s.msr_deltas;
    scr_ = s.scr;
    dll_ = s.dll;
    dlm_ = s.dlm;
    thre_pending_ = s.thre_pending;
    rx_fifo_.assign(s.rx_fifo.begin(), s.rx_fifo.end());
    rx_backlog_.assign(s.rx_backlog.begin(), s.rx_backlog.end());
    // irq_level_ is what this device last told its own line; this brings the line in line
    // with the restored registers.
    update_interrupt();
    return {};
}

uint8_t Uart16550::read_register(uint64_t offset) {
    if (offset > static_cast<uint8_t>(Reg::kScr)) return 0xff;  // a mapping longer than 8
    const bool dlab = (lcr_ & kLcrDlab) != 0;
    switch (static_cast<Reg>(offset)) {
    case Reg::kData: {
        if (dlab) return dll_;
        if (rx_fifo_.empty()) return 0;
        uint8_t b = rx_fifo_.front();
        rx_fifo_.pop_front();
        refill_fifo_from_backlog();
        update_interrupt();
        return b;
    }
    case Reg::kIer:
        return dlab ? dlm_ : ier_;
    case Reg::kIirFcr: {
        uint8_t iir = interrupt_identification();
        // §8.6 Table IV: reading IIR when THRE is the reported source clears it.
        if ((iir & 0x0f) == kIirThrEmpty) {
            thre_pending_ = false;
            update_interrupt();
        }
        return iir;
    }
    case Reg::kLcr:
        return lcr_;
    case Reg::kMcr:
        return mcr_;
    case Reg::kLsr: {
        uint8_t lsr = static_cast<uint8_t>(kLsrThrEmpty | kLsrTransmitterEmpty | lsr_errors_);
        if (!rx_fifo_.empty()) lsr |= kLsrDataReady;
        lsr_errors_ = 0;
        update_interrupt();
        return lsr;
    }
    case Reg::kMsr: {
        uint8_t msr = static_cast<uint8_t>(modem_status_lines() | msr_deltas_);
        msr_deltas_ = 0;
        update_interrupt();
        return msr;
    }
    case Reg::kScr:
        return scr_;
    }
    return 0xff;
}

std::optional<uint8_t> Uart16550::write_register(uint64_t offset, uint8_t value) {
    if (offset > static_cast<uint8_t>(Reg::kScr)) {
        log::debug("uart16550: write to offset {} ignored", offset);
        return std::nullopt;
    }
    const bool dlab = (lcr_ & kLcrDlab) != 0;
    switch (static_cast<Reg>(offset)) {
    case Reg::kData:
        if (dlab) {
            dll_ = value;
            return std::nullopt;
        }
        // The byte leaves at once, so THR is empty again: re-arm THRE.
        thre_pending_ = true;
        if (mcr_ & kMcrLoop) {
            receive_into_fifo(value);
            update_interrupt();
            return std::nullopt;
        }
        update_interrupt();
        return value;
    case Reg::kIer: {
        if (dlab) {
            dlm_ = value;
            return std::nullopt;
        }
        const uint8_t old = ier_;
        ier_ = value & kIerMask;
        // Enabling ETBEI while THR is empty raises THRE; Linux's startup test relies on it
        // (toggles IER to 0 and back and expects the interrupt again).
        if (!(old & kIerThrEmpty) && (ier_ & kIerThrEmpty)) thre_pending_ = true;
        update_interrupt();
        return std::nullopt;
    }
    case Reg::kIirFcr:
        write_fcr(value);
        return std::nullopt;
    case Reg::kLcr:
        lcr_ = value;
        return std::nullopt;
    case Reg::kMcr:
        write_mcr(value);
        return std::nullopt;
    case Reg::kLsr:
        // Factory test register on real parts; writes have no defined effect.
        log::debug("uart16550: write {:#x} to LSR ignored", value);
        return std::nullopt;
    case Reg::kMsr:
        log::debug("uart16550: write {:#x} to MSR ignored", value);
        return std::nullopt;
    case Reg::kScr:
        scr_ = value;
        return std::nullopt;
    }
    return std::nullopt;
}

void Uart16550::write_fcr(uint8_t value) {
    // §8.4: FCR0 must be set for the other bits to take effect; changing FCR0 clears
    // both FIFOs.
    const bool was_enabled = fifo_enabled();
    const bool enable = (value & kFcrEnable) != 0;
    if (was_enabled != enable || (enable && (value & kFcrClearRx))) rx_fifo_.clear();
    fcr_ = enable ? static_cast<uint8_t>(value & (kFcrEnable | kFcrTriggerMask)) : 0;
    // Disabling leaves a 1-byte RBR, which clear() above already respected.
    refill_fifo_from_backlog();
    update_interrupt();
}

void Uart16550::write_mcr(uint8_t value) {
    const uint8_t old_lines = modem_status_lines();
    const bool was_loop = (mcr_ & kMcrLoop) != 0;
    mcr_ = value & kMcrMask;
    const uint8_t new_lines = modem_status_lines();
    const uint8_t changed = old_lines ^ new_lines;
    if (changed & kMsrCts) msr_deltas_ |= kMsrDcts;
    if (changed & kMsrDsr) msr_deltas_ |= kMsrDdsr;
    if (changed & kMsrDcd) msr_deltas_ |= kMsrDdcd;
    if ((old_lines & kMsrRi) && !(new_lines & kMsrRi)) msr_deltas_ |= kMsrTeri;  // trailing edge
    if (was_loop && !(mcr_ & kMcrLoop)) refill_fifo_from_backlog();
    update_interrupt();
}

void Uart16550::receive_into_fifo(uint8_t byte) {
    if (rx_fifo_.size() < fifo_capacity()) {
        rx_fifo_.push_back(byte);
    } else {
        // §8.7 LSR1: the character is lost and OE is set.
        lsr_errors_ |= kLsrOverrun;
        log::debug("uart16550: receive overrun in loopback");
    }
}

void Uart16550::refill_fifo_from_backlog() {
    if (mcr_ & kMcrLoop) return;
    while (!rx_backlog_.empty() && rx_fifo_.size() < fifo_capacity()) {
        rx_fifo_.push_back(rx_backlog_.front());
        rx_backlog_.pop_front();
    }
}

bool Uart16550::fifo_enabled() const { return (fcr_ & kFcrEnable) != 0; }

size_t Uart16550::fifo_capacity() const { return fifo_enabled() ? kRxFifoSize : 1; }

uint8_t Uart16550::modem_status_lines() const {
    if (!(mcr_ & kMcrLoop)) return kMsrDcd | kMsrDsr | kMsrCts;
    // §8.9 MCR4: in loopback the modem outputs feed the modem inputs.
    uint8_t lines = 0;
    if (mcr_ & kMcrRts) lines |= kMsrCts;
    if (mcr_ & kMcrDtr) lines |= kMsrDsr;
    if (mcr_ & kMcrOut1) lines |= kMsrRi;
    if (mcr_ & kMcrOut2) lines |= kMsrDcd;
    return lines;
}

uint8_t Uart16550::interrupt_identification() const {
    const uint8_t fifo_bits = fifo_enabled() ? kIirFifosEnabled : 0;
    if ((ier_ & kIerLineStatus) && lsr_errors_) return static_cast<uint8_t>(fifo_bits | kIirLineStatus);
    if ((ier_ & kIerRxData) && !rx_fifo_.empty()) {
        // Below the trigger level a real part reports a character timeout after four
        // character times; we report it at once so the guest never waits on data.
        static constexpr size_t kTriggerLevels[] = {1, 4, 8, 14};
        const size_t trigger = fifo_enabled() ? kTriggerLevels[fcr_ >> 6] : 1;
        return static_cast<uint8_t>(fifo_bits | (rx_fifo_.size() >= trigger ? kIirRxData : kIirCharTimeout));
    }
    if ((ier_ & kIerThrEmpty) && thre_pending_) return static_cast<uint8_t>(fifo_bits | kIirThrEmpty);
    if ((ier_ & kIerModemStatus) && msr_deltas_) return static_cast<uint8_t>(fifo_bits | kIirModemStatus);
    return static_cast<uint8_t>(fifo_bits | kIirNoInterrupt);
}

void Uart16550::update_interrupt() {
    const bool level = (interrupt_identification() & kIirNoInterrupt) == 0;
    if (level == irq_level_) return;
    irq_level_ = level;
    if (irq_) irq_->set_level(level);
}

}  // namespace kestrel
