#include "devices/legacy/i8042.hpp"

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
constexpr uint8_t kCtrSystemFlag = 0x04;
constexpr uint8_t kCtrKbdDisabled = 0x10;
constexpr uint8_t kCtrAuxDisabled = 0x20;

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

}  // namespace

I8042::I8042(std::function<void()> on_reset) : on_reset_(std::move(on_reset)) {}

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
    }
    if (reset && on_reset_) on_reset_();
}

uint8_t I8042::read_status() const {
    uint8_t status = kStatusNotInhibited;
    if (command_byte_ & kCtrSystemFlag) status |= kStatusSystemFlag;
    if (last_write_was_command_) status |= kStatusLastWasCommand;
    if (output_) {
        status |= kStatusOutputFull;
        if (output_from_aux_) status |= kStatusAuxData;
    }
    return status;
}

uint8_t I8042::read_data() {
    if (output_) {
        last_output_ = *output_;
        output_.reset();
        output_from_aux_ = false;
    }
    return last_output_;
}

bool I8042::write_command(uint8_t cmd) {
    last_write_was_command_ = true;
    pending_cmd_.reset();
    auto respond = [this](uint8_t v) {
        output_ = v;
        output_from_aux_ = false;
    };
    // 0xF0..0xFF pulse output port bits 0..3 low for those bits that are 0 in the command;
    // bit 0 is the reset line (0xFE is the classic "reboot via keyboard controller").
    if (cmd >= 0xf0) return (cmd & kOutputPortResetDeasserted) == 0;
    switch (static_cast<Cmd>(cmd)) {
    case Cmd::kReadCommandByte:
        respond(command_byte_);
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
    case Cmd::kTestKbd:
        respond(kInterfaceTestPassed);
        return false;
    case Cmd::kSelfTest:
        respond(kSelfTestPassed);
        return false;
    case Cmd::kDisableKbd:
        command_byte_ |= kCtrKbdDisabled;
        return false;
    case Cmd::kEnableKbd:
        command_byte_ &= static_cast<uint8_t>(~kCtrKbdDisabled);
        return false;
    case Cmd::kReadOutputPort:
        respond(output_port_);
        return false;
    case Cmd::kDisableA20:
        output_port_ &= static_cast<uint8_t>(~kOutputPortA20);
        return false;
    case Cmd::kEnableA20:
        output_port_ |= kOutputPortA20;
        return false;
    }
    if (cmd > static_cast<uint8_t>(Cmd::kReadCommandByte) && cmd < 0x40) {
        respond(0);  // controller RAM bytes 1..31: nothing stored there
        return false;
    }
    log::debug("i8042: unsupported command {:#x} ignored", cmd);
    return false;
}

bool I8042::write_data(uint8_t value) {
    last_write_was_command_ = false;
    if (!pending_cmd_) {
        // Bytes for the keyboard; none is attached, so nothing answers.
        log::debug("i8042: keyboard data {:#x} ignored (no keyboard)", value);
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
        output_ = value;
        output_from_aux_ = false;
        return false;
    case Cmd::kWriteAuxOutput:
        output_ = value;
        output_from_aux_ = true;
        return false;
    case Cmd::kWriteToAux:
        log::debug("i8042: mouse data {:#x} ignored (no mouse)", value);
        return false;
    default:
        return false;
    }
}

}  // namespace kestrel
