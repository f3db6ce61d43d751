// libFuzzer target for the I/O APIC (devices/legacy/ioapic.*): any sequence of MMIO accesses
// anywhere in its 4 KiB window (any width 1-8, so IOREGSEL/IOWIN and every indirect
// register index, valid or not), line changes on any pin number (also past the 24 pins) and
// EOIs of any vector. Besides the sanitizers it checks what the guest and the VMM can see:
//  - route(pin, ...) only for pins 0..23, with an MSI address in the 0xfee00000 window
//    (SDM vol. 3A §10.11.1);
//  - every delivered message is the routed message of an unmasked pin;
//  - reserved redirection-entry bits 17..55 stay zero, the version register reads 0x170011.
//
// Input: a sequence of ops, each one selector byte (b % 5) and its operands:
//   0 write   u16 offset (& 0xfff), u8 width (1 << (b & 3)), u64 value
//   1 read    u16 offset, u8 width
//   2 line    u8 pin (any), u8 level (bit 0)
//   3 eoi     u8 vector
//   4 entry   u8 pin, u32 low, u32 high: IOREGSEL/IOWIN writes of redirection entry `pin`
#include <array>
#include <cstdint>
#include <memory>
#include <vector>

#include "devices/legacy/ioapic.hpp"
#include "tests/fuzz/fuzz_support.hpp"

using namespace kestrel;
using namespace kestrel::fuzz;

namespace {

constexpr uint64_t kNoRoute = ~0ull;
constexpr uint64_t kReservedRteBits = 0x00ff'ffff'fffe'0000ull;  // bits 17..55 (82093AA §3.2.4)

struct CheckingSink final : IoApicSink {
    std::array<uint64_t, IoApic::kPins> routes;
    std::vector<uint64_t> delivered;  // since the last verify()
    CheckingSink() { routes.fill(kNoRoute); }

    void route(uint8_t pin, uint64_t address, uint32_t data) override {
        check(pin < IoApic::kPins);
        check((address & 0xfff0'0000) == 0xfee0'0000 && address <= 0xffff'ffff);
        routes[pin] = address << 32 | data;
    }
    // Called with the IOAPIC's lock held, so entries cannot be read back here: verify()
    // does that after each access.
    void deliver(uint64_t address, uint32_t data) override { delivered.push_back(address << 32 | data); }

    // After one register access, pin change or EOI: each message delivered is the current
    // route of a pin whose entry is unmasked now (one access cannot unmask and re-mask).
    void verify(const IoApic& io) {
        for (uint8_t pin = 0; pin < IoApic::kPins; ++pin)
            check((io.redirection_entry(pin) & kReservedRteBits) == 0);
        for (uint64_t msg : delivered) {
            bool from_unmasked_pin = false;
            for (uint8_t pin = 0; pin < IoApic::kPins; ++pin)
                if (routes[pin] == msg && !(io.redirection_entry(pin) & IoApic::kMasked))
                    from_unmasked_pin = true;
            check(from_unmasked_pin);
        }
        delivered.clear();
    }
};

void write(IoApic& io, CheckingSink& sink, uint64_t offset, unsigned width, uint64_t value) {
    std::array<uint8_t, 8> b{};
    std::memcpy(b.data(), &value, 8);
    io.write(offset, std::span(b).first(width));
    sink.verify(io);
}

uint32_t read32(IoApic& io, uint64_t offset) {
    std::array<uint8_t, 4> b{};
    io.read(offset, b);
    uint32_t v;
    std::memcpy(&v, b.data(), 4);
    return v;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
    quiet_logs();
    return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    auto sink = std::make_shared<CheckingSink>();
    auto io = std::make_shared<IoApic>(sink);
    Input in(data, size);
    for (int ops = 0; !in.empty() && ops < 4096; ++ops) {
        switch (in.u8() % 5) {
        case 0: {
            uint64_t offset = in.u16() & 0xfff;
            unsigned width = 1u << (in.u8() & 3);
            write(*io, *sink, offset, width, in.u64());
            break;
        }
        case 1: {
            uint64_t offset = in.u16() & 0xfff;
            std::array<uint8_t, 8> b{};
            io->read(offset, std::span(b).first(1u << (in.u8() & 3)));
            break;
        }
        case 2: {
            uint8_t pin = in.u8();
            bool level = in.u8() & 1;
            if (pin < IoApic::kPins) ioapic_line(io, pin)->set_level(level);
            else io->set_level(pin, level);
            sink->verify(*io);
            break;
        }
        case 3:
            io->end_of_interrupt(in.u8());
            sink->verify(*io);
            break;
        case 4: {
            uint8_t pin = in.u8();
            uint32_t lo = in.u32(), hi = in.u32();
            write(*io, *sink, 0x00, 4, 0x10u + 2u * pin);
            write(*io, *sink, 0x10, 4, lo);
            write(*io, *sink, 0x00, 4, 0x11u + 2u * pin);
            write(*io, *sink, 0x10, 4, hi);
            break;
        }
        }
    }
    // The guest-visible identity survives any sequence (IOREGSEL is left wherever it was).
    write(*io, *sink, 0x00, 4, 0x01);
    check(read32(*io, 0x10) == 0x0017'0011);
    return 0;
}
