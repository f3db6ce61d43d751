#include "devices/legacy/i8042.hpp"

#include <array>

#include "vmm/base/log.hpp"

namespace kestrel {

namespace {

// Status register bits.
constexpr uint8_t kStatusOutputFull = 0x01;
constexpr uint8_t kStatusSystemFlag = 0x04;
constexpr uint8_t kStatusLastWasCommand = 0x08;
constexpr uint8_t kStatusNotInhibited = 0x10;
constexpr uint8_t kStatusAuxData = 0x20;

// Command byte bits.
constexpr uint8_t kCtrKbdInterrupt = 0x01;
constexpr uint8_t kCtrSystemFlag = 0x04;
constexpr uint8_t kCtrKbdDisabled = 0x10;
constexpr uint8_t kCtrAuxDisabled = 0x20;
constexpr uint8_t kCtrTranslate = 0x40;

// Output port bit 0 drives the CPU reset line, active low.
constexpr uint8_t kOutputPortResetDeasserted = 0x01;
constexpr uint8_t kOutputPortA20 = 0x02;

enum class Cmd : uint8_t {
    kReadCommandByte = 0x20,
    kWriteCommandByte = 0x60,
    kDisableAux = 0xa7,
    kEnableAux = 0xa8,
    kTestAux = 0xa9,
    kSelfTest = 0xaa,
    kTestKbd = 0xab,
    kDisableKbd = 0xad,
    kEnableKbd = 0xae,
    kReadOutputPort = 0xd0,
    kWriteOutputPort = 0xd1,
    kWriteKbdOutput = 0xd2,
    kWriteAuxOutput = 0xd3,
    kWriteToAux = 0xd4,
    kDisableA20 = 0xdd,
    kEnableA20 = 0xdf,
};

constexpr uint8_t kSelfTestPassed = 0x55;
constexpr uint8_t kInterfaceTestPassed = 0x00;
constexpr uint8_t kInterfaceClockStuckHigh = 0x02;  // the AUX test's answer: no AUX port

// Keyboard commands and answers (PS/2 keyboard command set).
enum class KbdCmd : uint8_t {
    kSetLeds = 0xed,
    kEcho = 0xee,
    kScanCodeSet = 0xf0,
    kGetId = 0xf2,
    kSetTypematic = 0xf3,
    kEnable = 0xf4,
    kDisable = 0xf5,   // also restores defaults
    kDefaults = 0xf6,
    kResend = 0xfe,
    kReset = 0xff,
};
constexpr uint8_t kKbdAck = 0xfa;
constexpr uint8_t kKbdSelfTestPassed = 0xaa;
constexpr uint8_t kKbdEcho = 0xee;
constexpr uint8_t kKbdIdFirst = 0xab;
constexpr uint8_t kKbdIdSecond = 0x83;            // MF2 keyboard, set 2
constexpr uint8_t kKbdIdSecondTranslated = 0x41;  // 0x83 through the controller's translation
constexpr uint8_t kScanSet2 = 0x02, kScanSet2Translated = 0x41;

// Ctrl down, Alt down, Delete down, then the releases in reverse order. Set 2: break codes
// are F0 before the make code, extended keys E0 first. Set 1 (what translation makes of
// them): make code | 0x80 for the break.
constexpr std::array<uint8_t, 11> kCtrlAltDelSet2{0x14, 0x11, 0xe0, 0x71, 0xe0, 0xf0, 0x71, 0xf0, 0x11, 0xf0, 0x14};
constexpr std::array<uint8_t, 8> kCtrlAltDelSet1{0x1d, 0x38, 0xe0, 0x53, 0xe0, 0xd3, 0xb8, 0x9d};
static_assert(kCtrlAltDelSet2.size() <= I8042::kKeyboardBuffer);

}  // namespace

I8042::I8042(std::function<void()> on_reset, std::shared_ptr<InterruptLine> kbd_irq)
    : on_reset_(std::move(on_reset)), kbd_irq_(std::move(kbd_irq)) {}

void I8042::read(uint64_t offset, std::span<uint8_t> data) {
    std::lock_guard lock(mutex_);
    for (size_t i = 0; i < data.size(); ++i) {
        const uint64_t off = offset + i;
        if (off == kDataOffset) {
            data[i] = read_data();
        } else if (off == kStatusCommandOffset) {
            data[i] = read_status();
        } else {
            data[i] = 0;
        }
    }
}

void I8042::write(uint64_t offset, std::span<const uint8_t> data) {
    bool reset = false;
    {
        std::lock_guard lock(mutex_);
        for (size_t i = 0; i < data.size(); ++i) {
            const uint64_t off = offset + i;
            if (off == kDataOffset) {
                reset |= write_data(data[i]);
            } else if (off == kStatusCommandOffset) {
                reset |= write_command(data[i]);
            } else {
                log::debug("i8042: write {:#x} to offset {} ignored", data[i], off);
            }
        }
        update_irq();
    }
    if (reset && on_reset_) on_reset_();
}

bool I8042::translating() const { return (command_byte_ & kCtrTranslate) != 0; }

// A keyboard byte sits in the output buffer only when no controller answer is ahead of it and
// the keyboard interface is enabled (the controller otherwise holds the keyboard's clock low,
// so its bytes stay in the keyboard).
uint8_t I8042::read_status() const {
    uint8_t status = kStatusNotInhibited;
    if (command_byte_ & kCtrSystemFlag) status |= kStatusSystemFlag;
    if (last_write_was_command_) status |= kStatusLastWasCommand;
    if (answer_) {
        status |= kStatusOutputFull;
        if (answer_from_aux_) status |= kStatusAuxData;
    } else if (!keyboard_.empty() && !(command_byte_ & kCtrKbdDisabled)) {
        status |= kStatusOutputFull;
    }
    return status;
}

uint8_t I8042::read_data() {
    if (answer_) {
        last_output_ = *answer_;
        answer_.reset();
        answer_from_aux_ = false;
    } else if (!keyboard_.empty() && !(command_byte_ & kCtrKbdDisabled)) {
        last_output_ = keyboard_.front();
        keyboard_.pop_front();
        // The output buffer empties, so IRQ 1 falls; the next byte (if any) raises it again:
        // one edge per byte on the edge-triggered ISA line.
        if (irq_level_ && kbd_irq_) kbd_irq_->set_level(false);
        irq_level_ = false;
    }
    update_irq();
    return last_output_;
}

void I8042::update_irq() {
    const bool level = (command_byte_ & kCtrKbdInterrupt) && !(command_byte_ & kCtrKbdDisabled) && !answer_ &&
                       !keyboard_.empty();
    if (level == irq_level_) return;
    irq_level_ = level;
    if (kbd_irq_) kbd_irq_->set_level(level);
}

void I8042::answer(uint8_t v, bool aux) {
    answer_ = v;
    answer_from_aux_ = aux;
}

void I8042::kbd_send(std::span<const uint8_t> bytes) {
    for (uint8_t b : bytes) {
        if (keyboard_.size() >= kKeyboardBuffer) {
            ++counters_.dropped;
            log::debug("i8042: keyboard buffer full, byte {:#x} dropped", b);
            continue;
        }
        keyboard_.push_back(b);
    }
}

bool I8042::write_command(uint8_t cmd) {
    last_write_was_command_ = true;
    pending_cmd_.reset();
    // 0xF0..0xFF pulse output port bits 0..3 low for those bits that are 0 in the command;
    // bit 0 is the reset line (0xFE is the classic "reboot via keyboard controller").
    if (cmd >= 0xf0) return (cmd & kOutputPortResetDeasserted) == 0;
    switch (static_cast<Cmd>(cmd)) {
    case Cmd::kReadCommandByte:
        answer(command_byte_);
        return false;
    case Cmd::kWriteCommandByte:
    case Cmd::kWriteOutputPort:
    case Cmd::kWriteKbdOutput:
    case Cmd::kWriteAuxOutput:
    case Cmd::kWriteToAux:
        pending_cmd_ = cmd;
        return false;
    case Cmd::kDisableAux:
        command_byte_ |= kCtrAuxDisabled;
        return false;
    case Cmd::kEnableAux:
        command_byte_ &= static_cast<uint8_t>(~kCtrAuxDisabled);
        return false;
    case Cmd::kTestAux:
        answer(kInterfaceClockStuckHigh);  // no AUX port (header comment)
        return false;
    case Cmd::kTestKbd:
        answer(kInterfaceTestPassed);
        return false;
    case Cmd::kSelfTest:
        answer(kSelfTestPassed);
        return false;
    case Cmd::kDisableKbd:
        command_byte_ |= kCtrKbdDisabled;
        return false;
    case Cmd::kEnableKbd:
        command_byte_ &= static_cast<uint8_t>(~kCtrKbdDisabled);
        return false;
    case Cmd::kReadOutputPort:
        answer(output_port_);
        return false;
    case Cmd::kDisableA20:
        output_port_ &= static_cast<uint8_t>(~kOutputPortA20);
        return false;
    case Cmd::kEnableA20:
        output_port_ |= kOutputPortA20;
        return false;
    }
    if (cmd > static_cast<uint8_t>(Cmd::kReadCommandByte) && cmd < 0x40) {
        answer(0);  // controller RAM bytes 1..31: nothing stored there
        return false;
    }
    log::debug("i8042: unsupported command {:#x} ignored", cmd);
    return false;
}

bool I8042::write_data(uint8_t value) {
    last_write_was_command_ = false;
    if (!pending_cmd_) {
        keyboard_command(value);
        return false;
    }
    const auto cmd = static_cast<Cmd>(*pending_cmd_);
    pending_cmd_.reset();
    switch (cmd) {
    case Cmd::kWriteCommandByte:
        command_byte_ = value;
        return false;
    case Cmd::kWriteOutputPort:
        output_port_ = value;
        return (value & kOutputPortResetDeasserted) == 0;
    case Cmd::kWriteKbdOutput:
        answer(value);
        return false;
    case Cmd::kWriteAuxOutput:
        answer(value, /*aux=*/false);  // no AUX port: the loopback comes back as keyboard data
        return false;
    case Cmd::kWriteToAux:
        log::debug("i8042: mouse data {:#x} ignored (no mouse)", value);
        return false;
    default:
        return false;
    }
}

// A byte for the keyboard. Its answers replace whatever it still had for the host, as a PS/2
// keyboard clears its output buffer when the host sends it a command.
void I8042::keyboard_command(uint8_t value) {
    ++counters_.kbd_commands;
    if (pending_kbd_) {
        const auto cmd = static_cast<KbdCmd>(*pending_kbd_);
        pending_kbd_.reset();
        keyboard_.clear();
        if (cmd == KbdCmd::kScanCodeSet && value == 0) {
            // Only set 2 exists here; other sets are acknowledged and ignored.
            const std::array<uint8_t, 2> ack_set{kKbdAck, translating() ? kScanSet2Translated : kScanSet2};
            return kbd_send(ack_set);
        }
        const uint8_t ack = kKbdAck;
        return kbd_send(std::span(&ack, 1));  // LED state, typematic rate, scan set: noted, unused
    }
    keyboard_.clear();
    switch (static_cast<KbdCmd>(value)) {
    case KbdCmd::kSetLeds:
    case KbdCmd::kScanCodeSet:
    case KbdCmd::kSetTypematic: {
        pending_kbd_ = value;
        const uint8_t ack = kKbdAck;
        return kbd_send(std::span(&ack, 1));
    }
    case KbdCmd::kEcho: {
        const uint8_t echo = kKbdEcho;
        return kbd_send(std::span(&echo, 1));
    }
    case KbdCmd::kGetId: {
        const std::array<uint8_t, 3> id{kKbdAck, kKbdIdFirst, translating() ? kKbdIdSecondTranslated : kKbdIdSecond};
        return kbd_send(id);
    }
    case KbdCmd::kReset: {
        scanning_ = true;
        const std::array<uint8_t, 2> bat{kKbdAck, kKbdSelfTestPassed};
        return kbd_send(bat);
    }
    case KbdCmd::kEnable:
    case KbdCmd::kDefaults:
        scanning_ = true;
        break;
    case KbdCmd::kDisable:
        scanning_ = false;
        break;
    case KbdCmd::kResend:
        break;
    }
    // Everything else (the set-3 key type commands 0xF7..0xFD included) is acknowledged.
    const uint8_t ack = kKbdAck;
    kbd_send(std::span(&ack, 1));
}

Result<void> I8042::send_ctrl_alt_del() {
    std::lock_guard lock(mutex_);
    if (!scanning_) return not_allowed("the guest has disabled its keyboard (PS/2 command 0xF5): no keys reach it");
    const std::span<const uint8_t> seq =
        translating() ? std::span<const uint8_t>(kCtrlAltDelSet1) : std::span<const uint8_t>(kCtrlAltDelSet2);
    if (kKeyboardBuffer - keyboard_.size() < seq.size())
        return not_allowed("the guest has not read the keyboard's previous {} byte(s) yet", keyboard_.size());
    kbd_send(seq);
    ++counters_.ctrl_alt_del;
    if (!(command_byte_ & kCtrKbdInterrupt) || (command_byte_ & kCtrKbdDisabled))
        log::info("i8042: Ctrl-Alt-Del queued, but the guest has the keyboard interrupt or interface off "
                  "(command byte {:#04x}); it sees the keys when it turns them on or polls", command_byte_);
    update_irq();
    return {};
}

I8042::State I8042::save() const {
    std::lock_guard lock(mutex_);
    return State{
        .command_byte = command_byte_,
        .output_port = output_port_,
        .has_answer = answer_.has_value(),
        .answer = answer_.value_or(0),
        .answer_from_aux = answer_from_aux_,
        .keyboard = {keyboard_.begin(), keyboard_.end()},
        .last_output = last_output_,
        .has_pending_cmd = pending_cmd_.has_value(),
        .pending_cmd = pending_cmd_.value_or(0),
        .has_pending_kbd = pending_kbd_.has_value(),
        .pending_kbd = pending_kbd_.value_or(0),
        .last_write_was_command = last_write_was_command_,
        .scanning = scanning_,
    };
}

namespace {

// Refuses what write_command()/keyboard_command() never leave behind.
Result<void> validate(const I8042::State& s) {
    if (s.keyboard.size() > I8042::kKeyboardBuffer)
        return bad_request("i8042: keyboard holds {} bytes, more than its {}", s.keyboard.size(),
                           I8042::kKeyboardBuffer);
    if (!s.has_answer && (s.answer != 0 || s.answer_from_aux))
        return bad_request("i8042: answer {:#04x} (aux {}) given without has_answer", s.answer, s.answer_from_aux);
    if (s.has_pending_cmd) {
        switch (static_cast<Cmd>(s.pending_cmd)) {
        case Cmd::kWriteCommandByte:
        case Cmd::kWriteOutputPort:
        case Cmd::kWriteKbdOutput:
        case Cmd::kWriteAuxOutput:
        case Cmd::kWriteToAux:
            break;
        default:
            return bad_request("i8042: pending_cmd {:#04x} is not a controller command that takes a data byte",
                               s.pending_cmd);
        }
    } else if (s.pending_cmd != 0) {
        return bad_request("i8042: pending_cmd {:#04x} given without has_pending_cmd", s.pending_cmd);
    }
    if (s.has_pending_kbd) {
        switch (static_cast<KbdCmd>(s.pending_kbd)) {
        case KbdCmd::kSetLeds:
        case KbdCmd::kScanCodeSet:
        case KbdCmd::kSetTypematic:
            break;
        default:
            return bad_request("i8042: pending_kbd {:#04x} is not a keyboard command that takes a parameter",
                               s.pending_kbd);
        }
    } else if (s.pending_kbd != 0) {
        return bad_request("i8042: pending_kbd {:#04x} given without has_pending_kbd", s.pending_kbd);
    }
    return {};
}

}  // namespace

Result<void> I8042::restore(const State& s) {
    std::lock_guard lock(mutex_);
    TRY(validate(s));
    command_byte_ = s.command_byte;
    output_port_ = s.output_port;
    answer_ = s.has_answer ? std::optional<uint8_t>(s.answer) : std::nullopt;
    answer_from_aux_ = s.answer_from_aux;
    keyboard_.assign(s.keyboard.begin(), s.keyboard.end());
    last_output_ = s.last_output;
    pending_cmd_ = s.has_pending_cmd ? std::optional<uint8_t>(s.pending_cmd) : std::nullopt;
    pending_kbd_ = s.has_pending_kbd ? std::optional<uint8_t>(s.pending_kbd) : std::nullopt;
    last_write_was_command_ = s.last_write_was_command;
    scanning_ = s.scanning;
    // irq_level_ is what this device last told its own line; this brings IRQ 1 in line with
    // the restored buffers and command byte.
    update_irq();
    return {};
}

I8042::Counters I8042::counters() const {
    std::lock_guard lock(mutex_);
    return counters_;
}

}  // namespace kestrel
