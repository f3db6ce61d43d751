// blk-bench: pushes virtio-blk requests through the real VirtioBlk + SplitQueue + io_uring
// back-end against a file, with the MockDriver standing in for the guest (no VM). Measures
// what the device model costs on top of the host I/O; tools/bench-blk.sh compares it with
// fio on the same file. Prints one line of key=value results. Never a pass/fail on speed.
//
// usage: blk-bench --image PATH --rw randread|read|write --bs BYTES --qd N [--seconds S]
//                  [--direct]
#include <poll.h>
#include <sys/epoll.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "devices/virtio/blk/blk_spec.hpp"
#include "devices/virtio/blk/virtio_blk.hpp"
#include "devices/virtio/queue/mock_driver.hpp"
#include "tools/bench/poll_registry.hpp"
#include "devices/virtio/queue/virtq_spec.hpp"

using namespace kestrel;

namespace {

using bench::PollRegistry;
using NullInterrupt = bench::CountingInterrupt;

[[noreturn]] void usage(const char* why) {
    std::fprintf(stderr, "blk-bench: %s\nusage: blk-bench --image PATH --rw randread|read|write "
                         "--bs BYTES --qd N [--seconds S] [--direct]\n", why);
    std::exit(2);
}

}  // namespace

int main(int argc, char** argv) {
    std::string image, rw = "randread";
    uint64_t bs = 4096;
    uint32_t qd = 1;
    double seconds = 5;
    bool direct = false;
    for (int i = 1; i < argc; ++i) {
        std::string a = argv[i];
        auto val = [&]() -> std::string { if (i + 1 >= argc) usage("missing value"); return argv[++i]; };
        if (a == "--image") image = val();
        else if (a == "--rw") rw = val();
        else if (a == "--bs") bs = std::strtoull(val().c_str(), nullptr, 0);
        else if (a == "--qd") qd = static_cast<uint32_t>(std::strtoul(val().c_str(), nullptr, 0));
        else if (a == "--seconds") seconds = std::strtod(val().c_str(), nullptr);
        else if (a == "--direct") direct = true;
        else usage("unknown option");
    }
    if (image.empty()) usage("--image is required");
    if (rw != "randread" && rw != "read" && rw != "write") usage("bad --rw");
    if (bs == 0 || bs % 4096 != 0 || bs > (1 << 20)) usage("--bs must be a multiple of 4096, at most 1 MiB");
    constexpr uint16_t kQueueSize = 256;
    if (qd == 0 || qd * 3 > kQueueSize) usage("--qd must be 1..85");
    bool write = rw == "write";

    VirtioBlkOptions opts;
    opts.path = image;
    opts.direct = direct;
    opts.queue_size = kQueueSize;
    auto dev_r = VirtioBlk::create(opts);
    if (!dev_r) {
        std::fprintf(stderr, "blk-bench: %s\n", dev_r.error().what().c_str());
        return 1;
    }
    VirtioBlk& dev = **dev_r;
    uint64_t blocks = dev.capacity_sectors() * 512 / bs;
    if (blocks == 0) usage("image smaller than one block");

    uint64_t area = 1 << 20;
    area += uint64_t{qd} * (bs + 8192);
    area = (area + (2 << 20) - 1) / (2 << 20) * (2 << 20);
    GuestRegionSpec spec{GuestAddress(0), area};
    auto mem_r = GuestMemory::create(std::span(&spec, 1));
    if (!mem_r) {
        std::fprintf(stderr, "blk-bench: %s\n", mem_r.error().what().c_str());
        return 1;
    }
    GuestMemory& mem = *mem_r;
    MockDriver drv(mem, GuestAddress(0), area, kQueueSize);
    PollRegistry events;
    NullInterrupt irq;
    if (auto r = dev.activate(ActivateContext{mem, dev.device_features(), {drv.config()}, irq, events}); !r) {
        std::fprintf(stderr, "blk-bench: %s\n", r.error().what().c_str());
        return 1;
    }

    // Per slot: a header, a 4 KiB-aligned data buffer (as a guest's page-backed bio would
    // be), a status byte; three fixed descriptors like Linux's virtio_blk without indirect.
    struct Slot {
        GuestAddress hdr, data, status;
    };
    std::vector<Slot> slots(qd);
    for (uint32_t i = 0; i < qd; ++i) {
        Slot& s = slots[i];
        s.hdr = drv.alloc(16);
        s.status = drv.alloc(16);
        GuestAddress raw = drv.alloc(bs + 4096);
        s.data = GuestAddress((raw.raw + 4095) / 4096 * 4096);
        auto d = static_cast<uint16_t>(3 * i);
        uint16_t data_flags = virtq::kDescFNext | (write ? 0 : virtq::kDescFWrite);
        drv.write_descriptor(d, {s.hdr.raw, 16, virtq::kDescFNext, static_cast<uint16_t>(d + 1)});
        drv.write_descriptor(static_cast<uint16_t>(d + 1),
                             {s.data.raw, static_cast<uint32_t>(bs), data_flags, static_cast<uint16_t>(d + 2)});
        drv.write_descriptor(static_cast<uint16_t>(d + 2), {s.status.raw, 1, virtq::kDescFWrite, 0});
        if (write) (void)mem.fill(s.data, bs, static_cast<uint8_t>(0x5a + i));
    }

    uint64_t rng = 0x9e3779b97f4a7c15ull, seq = 0;
    auto next_block = [&]() -> uint64_t {
        if (rw == "randread") {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            return rng % blocks;
        }
        return seq++ % blocks;
    };
    auto queue_slot = [&](uint32_t i) {
        blk::RequestHeader h{write ? blk::kTypeOut : blk::kTypeIn, 0, next_block() * bs / 512};
        (void)mem.write_obj(slots[i].hdr, h);
        (void)mem.write_obj(slots[i].status, uint8_t{0xff});
        drv.push_avail(static_cast<uint16_t>(3 * i));
    };

    for (uint32_t i = 0; i < qd; ++i) queue_slot(i);
    auto t0 = std::chrono::steady_clock::now();
    auto deadline = t0 + std::chrono::duration<double>(seconds);
    drv.set_used_event(drv.used_idx());
    drv.kick();
    dev.queue_notify(0);
    uint64_t ios = 0, errors = 0;
    bool stopping = false;
    uint32_t outstanding = qd;
    while (outstanding > 0) {
        uint32_t again = 0;
        while (auto u = drv.next_used()) {
            uint32_t i = u->first / 3;
            auto st = mem.read_obj<uint8_t>(slots[i].status);
            if (!st || *st != blk::kStatusOk) ++errors;
            ++ios;
            --outstanding;
            if (!stopping) {
                queue_slot(i);
                ++outstanding;
                ++again;
            }
        }
        if (again > 0) {
            drv.set_used_event(drv.used_idx());
            drv.kick();
            dev.queue_notify(0);
            if ((ios & 63) == 0 && std::chrono::steady_clock::now() >= deadline) stopping = true;
        } else {
            if (std::chrono::steady_clock::now() >= deadline) stopping = true;
            events.dispatch(100);
        }
    }
    double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    dev.reset();  // before mem/events go out of scope: they must outlive activation
    const BlkMetrics& m = dev.metrics();
    std::printf("rw=%s bs=%llu qd=%u direct=%d ios=%llu errors=%llu seconds=%.2f iops=%.0f mibps=%.1f "
                "batches=%llu interrupts=%llu bounced=%llu\n",
                rw.c_str(), static_cast<unsigned long long>(bs), qd, direct ? 1 : 0,
                static_cast<unsigned long long>(ios), static_cast<unsigned long long>(errors), secs,
                static_cast<double>(ios) / secs, static_cast<double>(ios * bs) / secs / (1 << 20),
                static_cast<unsigned long long>(BlkMetrics::get(m.batches)),
                static_cast<unsigned long long>(BlkMetrics::get(m.interrupts)),
                static_cast<unsigned long long>(BlkMetrics::get(m.bounced)));
    return errors == 0 ? 0 : 1;
}
