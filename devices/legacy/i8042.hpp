// I8042: the PS/2 keyboard controller with a keyboard behind it, as far as Linux's i8042 and
// atkbd drivers use them on a VM: the reset line (the "reboot=k" path), the command byte and
// self tests, and a keyboard that answers atkbd's probe (GETID, LEDs, typematic rate, scan
// code set, enable/disable) and types Ctrl-Alt-Del when the VMM asks (Firecracker's
// SendCtrlAltDel). Linux turns that key combination into ctrl_alt_del(): SIGINT to init, or
// an immediate reboot when /proc/sys/kernel/ctrl-alt-del is set.
//
// Mapping: base x86::kI8042DataPort (0x60), length 5. Offset 0 = data port (0x60),
// offset 4 = status (read) / command (write) port (0x64). Offsets 1..3 (0x61..0x63, e.g.
// the PC speaker / NMI status port 0x61) read 0 and ignore writes; KVM's in-kernel PIT
// handles 0x61 itself when present.
//
// Output: a controller command's answer (one byte) goes before anything the keyboard sent;
// the keyboard's bytes wait in its own buffer (kKeyboardBuffer, what a PS/2 keyboard holds)
// while the command byte disables the keyboard interface, and reach the data port one at a
// time. IRQ 1 is asserted while a keyboard byte waits in the output buffer and the command
// byte enables the keyboard interrupt, so the edge-triggered ISA line sees one rising edge per
// byte. Controller answers raise no interrupt: Linux polls for them (i8042_command).
//
// Scan codes: the keyboard speaks set 2; with the command byte's translate bit set the
// controller hands the host set 1 (IBM PS/2 Technical Reference, "Keyboard/Auxiliary Device
// Controller"). The default command byte has translation off, as Firecracker's does: Linux
// then keeps it off (i8042_controller_init: "nontranslated mode ... be happy") and atkbd reads
// set 2. Both are produced, for guests that turn translation on.
//
// No AUX (mouse) port: the AUX loopback (0xD3) answers on the keyboard channel and the AUX
// interface test (0xA9) reports the clock line stuck high, so Linux's i8042_check_aux gives up
// at once ("auxerr", no AUX port) instead of waiting 250 ms for an IRQ 12 and then probing a
// mouse that is not there.
//
// Commands: IBM PS/2 Technical Reference, "Keyboard/Auxiliary Device Controller" (the
// 0x20..0xFF controller command set) and "Keyboard" (the 0xED..0xFF keyboard command set).
//
// Threads: vCPUs do port I/O, the controller thread calls send_ctrl_alt_del; state behind a
// mutex, the interrupt line is driven with it held (the line never calls back), on_reset is
// called with no lock held.
#pragma once

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
#include "vmm/base/error.hpp"

namespace kestrel {

class I8042 final : public BusDevice {
public:
    static constexpr uint64_t kDataOffset = 0;
    static constexpr uint64_t kStatusCommandOffset = 4;
    static constexpr uint64_t kMappingLength = 5;
    // Bytes the keyboard holds for the host (a PS/2 keyboard's buffer is 16 bytes): bounds
    // what a guest that never reads can make the device keep.
    static constexpr size_t kKeyboardBuffer = 16;

    // `kbd_irq`: ISA IRQ 1; null for none (the keyboard then only works polled).
    explicit I8042(std::function<void()> on_reset, std::shared_ptr<InterruptLine> kbd_irq = nullptr);

    void read(uint64_t offset, std::span<uint8_t> data) override;
    void write(uint64_t offset, std::span<const uint8_t> data) override;

    // Presses Ctrl, Alt and Delete and releases them in reverse order (Firecracker sends the
    // three presses only; the releases leave the guest's modifier state clean). Refused
    // (NotAllowed) while the guest keeps the keyboard from scanning (command 0xF5) or has not
    // read enough of what the keyboard sent before for the sequence to fit.
    Result<void> send_ctrl_alt_del();

    struct Counters {
        uint64_t ctrl_alt_del = 0;   // sequences queued
        uint64_t kbd_commands = 0;   // bytes the host sent the keyboard
        uint64_t dropped = 0;        // keyboard answers lost to a full buffer
    };
    Counters counters() const;

    // The controller's and keyboard's guest-visible state, for snapshots and live migration:
    // the command byte, the output port, a controller answer waiting in the output buffer
    // (and whether it is flagged as AUX data), the bytes the keyboard holds for the host, the
    // byte the data port keeps returning once read, a controller command or keyboard command
    // still waiting for its data byte, status bit 3 (last write was a command) and whether
    // the keyboard is scanning. The status register and the IRQ 1 level follow from these.
    // Deliberately not held: the reset callback, the interrupt line and the level last given
    // to it (restore() re-derives it), and the counters (host statistics, not guest state).
    // Optional bytes are a has_ flag plus the byte, the byte 0 when the flag is clear.
    struct State {
        uint8_t command_byte = 0;
        uint8_t output_port = 0;
        bool has_answer = false;
        uint8_t answer = 0;
        bool answer_from_aux = false;
        std::vector<uint8_t> keyboard;  // oldest first; at most kKeyboardBuffer
        uint8_t last_output = 0;
        bool has_pending_cmd = false;
        uint8_t pending_cmd = 0;  // 0x60, 0xD1..0xD4: the commands that take a data byte
        bool has_pending_kbd = false;
        uint8_t pending_kbd = 0;  // 0xED, 0xF0, 0xF3: the keyboard commands that take one
        bool last_write_was_command = false;
        bool scanning = true;

        bool operator==(const State&) const = default;
    };
    State save() const;
    // Replaces the state with `s` after checking every bounded field (a snapshot file may be
    // hostile); on error nothing changes. Then drives IRQ 1 to match. Never calls on_reset.
    Result<void> restore(const State& s);

private:
    uint8_t read_status() const;                       // mutex_ held
    uint8_t read_data();                               // mutex_ held
    bool write_command(uint8_t cmd);                   // mutex_ held; true = pulse reset
    bool write_data(uint8_t value);                    // mutex_ held; true = pulse reset
    void keyboard_command(uint8_t value);              // mutex_ held
    void answer(uint8_t v, bool aux = false);          // mutex_ held: a controller answer
    void kbd_send(std::span<const uint8_t> bytes);     // mutex_ held: bytes from the keyboard
    bool translating() const;                          // mutex_ held
    void update_irq();                                 // mutex_ held

    const std::function<void()> on_reset_;
    const std::shared_ptr<InterruptLine> kbd_irq_;
    mutable std::mutex mutex_;
    std::optional<uint8_t> answer_;        // a controller command's answer (status OBF)
    bool answer_from_aux_ = false;         // status bit 5 for that byte
    std::deque<uint8_t> keyboard_;         // bytes the keyboard has for the host
    uint8_t last_output_ = 0;              // what the data port keeps returning once read
    std::optional<uint8_t> pending_cmd_;   // controller command waiting for its data byte
    std::optional<uint8_t> pending_kbd_;   // keyboard command waiting for its parameter
    bool last_write_was_command_ = false;  // status bit 3
    bool scanning_ = true;                 // keyboard enabled (0xF4) / disabled (0xF5)
    bool irq_level_ = false;
    // Keyboard interrupt, system flag, AUX disabled; no translation (see the header comment).
    uint8_t command_byte_ = 0x25;
    uint8_t output_port_ = 0x03;  // reset line high (not in reset), A20 on
    Counters counters_;
};

}  // namespace kestrel
