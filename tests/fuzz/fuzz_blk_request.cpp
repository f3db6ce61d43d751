// libFuzzer target for virtio-blk requests (devices/virtio/blk: virtio_blk.*, blk_request.*,
// uring_backend.*, block_file.*; virtio 1.2 §5.2.6): the real device on real image files
// through its io_uring back-end, activated per input on one or two queues the input places
// anywhere, then fed requests of every type (IN, OUT, FLUSH, GET_ID, DISCARD, WRITE_ZEROES
// and unknown ones) with every header length (a header cut short, exact, or with trailing
// bytes, split over descriptors or not, direct or indirect), and hostile ring contents.
//
// Three disks, chosen per input: read-write on the page cache, read-only (VIRTIO_BLK_F_RO,
// no DISCARD/WRITE_ZEROES), and read-write with O_DIRECT (unaligned guest buffers bounce).
// The images are 1 MiB sparse files in /dev/shm (the O_DIRECT one in $TMPDIR or /tmp, since
// tmpfs may refuse O_DIRECT); nothing is stubbed. Checks besides the sanitizers: the
// event loop settles (no fd that stays readable), reset leaves no fd registered and the
// device out of NEEDS_RESET, and a notification after reset touches no guest memory.
//
// Input: u8 disk (% 3), u64 feature mask (acked = offered & mask), u8 queues enabled
// (1 + bit 0), two queue placements (fuzz_support.hpp read_queue_spec), then ops, each
// one byte: bits 0-3 select (% 8), bit 4 the queue:
//   0 memory       raw guest write (raw_memory_write)
//   1 request      u32 type, u32 reserved, u64 sector, u8 header length (% 25), then a
//                  FuzzDriver chain whose first readable part is that header
//   2 chain        FuzzDriver chain (no header)
//   3 descriptor   FuzzDriver raw descriptor
//   4 avail        FuzzDriver raw avail entry
//   5 avail idx    FuzzDriver raw avail idx
//   6 flags        FuzzDriver avail flags / used_event
//   7 notify       u8 queue index (any), then the event loop runs
#include <fcntl.h>
#include <unistd.h>

#include <array>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "devices/virtio/blk/blk_spec.hpp"
#include "devices/virtio/blk/virtio_blk.hpp"
#include "tests/fuzz/fuzz_support.hpp"

using namespace kestrel;
using namespace kestrel::fuzz;

namespace {

constexpr uint64_t kImageBytes = 1 << 20;

// A sparse scratch image, removed at exit.
struct Image {
    std::string path;
    explicit Image(const std::string& dir) {
        std::string tmpl = dir + "/kestrel-fuzz-blk-XXXXXX";
        std::vector<char> buf(tmpl.begin(), tmpl.end());
        buf.push_back('\0');
        int fd = ::mkstemp(buf.data());
        check(fd >= 0);
        check(::ftruncate(fd, kImageBytes) == 0);
        ::close(fd);
        path = buf.data();
    }
    ~Image() { ::unlink(path.c_str()); }
};

struct Disk {
    std::unique_ptr<Image> image;
    std::unique_ptr<VirtioBlk> dev;
};

std::array<Disk, 3>& disks() {
    static std::array<Disk, 3> d = [] {
        const char* tmp = std::getenv("TMPDIR");
        std::string slow_dir = tmp && *tmp ? tmp : "/tmp";
        std::string fast_dir = ::access("/dev/shm", W_OK) == 0 ? "/dev/shm" : slow_dir;
        std::array<Disk, 3> out;
        const struct {
            bool ro, direct;
        } kinds[] = {{false, false}, {true, false}, {false, true}};
        for (size_t i = 0; i < 3; ++i) {
            out[i].image = std::make_unique<Image>(kinds[i].direct ? slow_dir : fast_dir);
            VirtioBlkOptions o{.path = out[i].image->path, .read_only = kinds[i].ro,
                               .direct = kinds[i].direct, .serial = "fuzz-disk-serial",
                               .num_queues = 2, .queue_size = 256};
            auto dev = VirtioBlk::create(o);
            check(dev.has_value());
            out[i].dev = std::move(*dev);
        }
        return out;
    }();
    return d;
}


}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
    quiet_logs();
    disks();
    return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    GuestMemory& mem = memory();
    clear_memory(mem);
    Input in(data, size);
    VirtioBlk& dev = *disks()[in.u8() % 3].dev;
    uint64_t acked = dev.device_features() & in.u64();
    unsigned nq = 1 + (in.u8() & 1);
    std::vector<QueueConfig> cfgs;
    std::vector<FuzzDriver> drivers;
    for (unsigned q = 0; q < 2; ++q) {
        QueueSpec s = read_queue_spec(in);
        if (q < nq) cfgs.push_back(s.cfg);
        drivers.emplace_back(mem, s.cfg);
    }
    FakeRegistry events;
    CountingInterrupt irq(2);
    // An activation the device refuses (bad ring placement) leaves it inactive: the
    // transport would set NEEDS_RESET; notifications are then ignored, which is checked too.
    (void)dev.activate(ActivateContext{mem, acked, cfgs, irq, events});

    for (int ops = 0; !in.empty() && ops < 256; ++ops) {
        uint8_t op = in.u8();
        FuzzDriver& d = drivers[(op >> 4) & 1];
        switch (op & 7) {
        case 0: raw_memory_write(mem, in); break;
        case 1: {
            std::array<uint8_t, 24> hdr{};  // a header plus trailing bytes
            blk::RequestHeader h{in.u32(), in.u32(), in.u64()};
            std::memcpy(hdr.data(), &h, sizeof h);
            in.bytes(std::span(hdr).subspan(sizeof h));
            size_t len = in.u8() % (hdr.size() + 1);
            if (len == 0) d.add_chain(in);
            else d.add_chain(in, std::span(hdr).first(len));
            break;
        }
        case 2: d.add_chain(in); break;
        case 3: d.raw_descriptor(in); break;
        case 4: d.raw_avail(in); break;
        case 5: d.raw_avail_idx(in); break;
        case 6: d.flags(in); break;
        case 7:
            dev.queue_notify(in.u8());
            events.settle(256, true);
            break;
        }
    }
    events.settle(256, true);
    dev.reset();
    check(events.size() == 0);
    check(!dev.needs_reset());
    MemorySnapshot before(mem);
    dev.queue_notify(0);
    dev.queue_notify(1);
    check(before.unchanged());
    return 0;
}
