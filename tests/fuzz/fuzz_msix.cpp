// libFuzzer target for the MSI-X table (devices/pci/msix.*): a table of any size (the
// constructor clamps to 1..2048), then any sequence of table and PBA accesses (any offset,
// any width 1-8), message-control writes and vector notifications (any vector number).
// Besides the sanitizers it checks the delivery rules of PCI 3.0 §6.8.2 as the guest sees
// them through the table, the PBA and the messages that arrive:
//  - a vector fires only while MSI-X is enabled, the function unmasked and the vector
//    unmasked, and never with its pending bit left set;
//  - a vector's message exists (configure()) before it fires, and what it delivers is the
//    address/data in its table entry (§6.8.2.8: the entry is read on unmask);
//  - a notification of an existing vector fires or leaves its pending bit set, never
//    neither; a pending bit is only ever set on a vector that cannot deliver now (masked),
//    and the PBA reads back the pending() bits;
//  - the message control register's table-size field is not affected (not ours to write).
//
// Input: u16 number of vectors, then ops, each one selector byte (b % 6) and its operands:
//   0 table write  u16 offset, u8 width (1 << (b & 3)), u64 value
//   1 table read   u16 offset, u8 width
//   2 PBA read     u16 offset, u8 width
//   3 control      u16 message control
//   4 notify       u16 vector
//   5 program      u16 vector, u32 address lo, u32 address hi, u32 data, u32 vector control
#include <array>
#include <cstdint>
#include <map>
#include <memory>
#include <vector>

#include "devices/pci/msix.hpp"
#include "tests/fuzz/fuzz_support.hpp"

using namespace kestrel;
using namespace kestrel::fuzz;

namespace {

struct RecordingSink final : MsiSink {
    struct Message {
        uint64_t address;
        uint32_t data;
    };
    std::map<uint16_t, Message> configured;  // the last configure() per vector
    std::vector<uint16_t> fired_now;  // since the last verify()
    uint16_t vectors = 0;

    void configure(uint16_t v, uint64_t address, uint32_t data) override {
        check(v < vectors);
        configured[v] = {address, data};
    }
    void fire(uint16_t v) override {
        check(v < vectors && configured.count(v));  // a message exists before it is sent
        fired_now.push_back(v);
    }
};

uint32_t table_dword(MsixTable& t, uint16_t v, unsigned field) {
    std::array<uint8_t, 4> b{};
    t.table_read(uint64_t{v} * msix::kEntrySize + field, b);
    uint32_t x;
    std::memcpy(&x, b.data(), 4);
    return x;
}

// Called after every guest access (and op): the table's and the sink's view of each vector
// agree. Within one access a fire is always the last thing that happens to its vector (an
// unmask is the last dword of an entry), so checking afterwards is exact.
void verify(MsixTable& t, RecordingSink& sink, uint16_t control) {
    const bool deliverable = (control & msix::kControlEnable) && !(control & msix::kControlFunctionMask);
    check(t.enabled() == ((control & msix::kControlEnable) != 0));
    auto unmasked = [&](uint16_t v) {
        return deliverable && !(table_dword(t, v, 12) & msix::kVectorControlMask);
    };
    for (uint16_t v : sink.fired_now) {
        check(unmasked(v));
        check(!t.pending(v));
        const auto& m = sink.configured.at(v);
        uint64_t address = uint64_t{table_dword(t, v, 4)} << 32 | table_dword(t, v, 0);
        check(m.address == address && m.data == table_dword(t, v, 8));
    }
    sink.fired_now.clear();

    // The PBA, read the way a guest reads it, is the pending set: every bit set names a
    // vector that exists and cannot deliver now (unmasking delivers), and pending() agrees.
    for (uint64_t q = 0; q < t.pba_bytes() / 8; ++q) {
        std::array<uint8_t, 8> b{};
        t.pba_read(q * 8, b);
        uint64_t word;
        std::memcpy(&word, b.data(), 8);
        for (uint64_t rest = word; rest != 0; rest &= rest - 1) {
            uint64_t v = q * 64 + static_cast<unsigned>(__builtin_ctzll(rest));
            check(v < t.num_vectors());
            check(t.pending(static_cast<uint16_t>(v)) && !unmasked(static_cast<uint16_t>(v)));
        }
    }
}

void table_write(MsixTable& t, uint64_t offset, unsigned width, uint64_t value) {
    std::array<uint8_t, 8> b{};
    std::memcpy(b.data(), &value, 8);
    t.table_write(offset, std::span(b).first(width));
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
    quiet_logs();
    return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    Input in(data, size);
    auto sink = std::make_shared<RecordingSink>();
    MsixTable table(in.u16(), sink);
    check(table.num_vectors() >= 1 && table.num_vectors() <= msix::kMaxVectors);
    sink->vectors = table.num_vectors();
    uint16_t control = 0;
    // Ops are cheap, but verify() walks the whole table: cap the work per input.
    for (int ops = 0; !in.empty() && ops < 512; ++ops) {
        switch (in.u8() % 6) {
        case 0: {
            uint64_t offset = in.u16();
            unsigned width = 1u << (in.u8() & 3);
            table_write(table, offset, width, in.u64());
            break;
        }
        case 1: {
            uint64_t offset = in.u16();
            std::array<uint8_t, 8> b{};
            table.table_read(offset, std::span(b).first(1u << (in.u8() & 3)));
            break;
        }
        case 2: {
            uint64_t offset = in.u16();
            std::array<uint8_t, 8> b{};
            table.pba_read(offset, std::span(b).first(1u << (in.u8() & 3)));
            break;
        }
        case 3:
            control = in.u16();
            table.set_control(control);
            break;
        case 4: {
            // A notification is never lost: it fires now or waits in the PBA.
            uint16_t v = in.u16();
            size_t fired = sink->fired_now.size();
            table.notify(v);
            if (v < table.num_vectors()) check(sink->fired_now.size() > fired || table.pending(v));
            else check(sink->fired_now.size() == fired);
            break;
        }
        case 5: {
            uint64_t base = uint64_t{in.u16()} * msix::kEntrySize;
            for (unsigned field = 0; field < 16; field += 4) {
                table_write(table, base + field, 4, in.u32());
                verify(table, *sink, control);
            }
            break;
        }
        }
        verify(table, *sink, control);
    }
    return 0;
}
