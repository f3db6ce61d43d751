// I8042: the PS/2 keyboard controller, only as far as Linux uses it on a VM without
// keyboard or mouse: the reset line (the "reboot=k" path), the command byte and the
// self tests. No device sits behind either port, so no IRQ 1/12 is ever raised and
// keyboard-port data writes are ignored.
//
// Mapping: base x86::kI8042DataPort (0x60), length 5. Offset 0 = data port (0x60),
// offset 4 = status (read) / command (write) port (0x64). Offsets 1..3 (0x61..0x63, e.g.
// the PC speaker / NMI status port 0x61) read 0 and ignore writes; KVM's in-kernel PIT
// handles 0x61 itself when present.
//
// Commands: IBM PS/2 Technical Reference, "Keyboard/Auxiliary Device Controller", command
// table (the 0x20..0xFF command set every 8042-compatible controller implements).
//
// Threads: state behind a mutex; on_reset is called with no lock held.
#pragma once

#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <span>

#include "devices/bus_device.hpp"

namespace kestrel {

class I8042 final : public BusDevice {
public:
    static constexpr uint64_t kDataOffset = 0;
    static constexpr uint64_t kStatusCommandOffset = 4;
    static constexpr uint64_t kMappingLength = 5;

    explicit I8042(std::function<void()> on_reset);

    void read(uint64_t offset, std::span<uint8_t> data) override;
    void write(uint64_t offset, std::span<const uint8_t> data) override;

private:
    uint8_t read_status() const;       // mutex_ held
    uint8_t read_data();               // mutex_ held
    bool write_command(uint8_t cmd);   // mutex_ held; true = pulse reset
    bool write_data(uint8_t value);    // mutex_ held; true = pulse reset

    const std::function<void()> on_reset_;
    std::mutex mutex_;
    std::optional<uint8_t> output_;        // byte waiting in the output buffer (status OBF)
    bool output_from_aux_ = false;         // status bit 5 for that byte
    uint8_t last_output_ = 0;              // what the data port keeps returning once read
    std::optional<uint8_t> pending_cmd_;   // command waiting for its data byte
    bool last_write_was_command_ = false;  // status bit 3
    uint8_t command_byte_ = 0x65;  // translate, AUX off, system flag, keyboard interrupt
    uint8_t output_port_ = 0x03;   // reset line high (not in reset), A20 on
};

}  // namespace kestrel
