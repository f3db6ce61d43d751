#include "devices/virtio/blk/uring_backend.hpp"

#include <doctest/doctest.h>
#include <fcntl.h>
#include <poll.h>
#include <unistd.h>

#include <chrono>
#include <map>
#include <vector>

#include "devices/virtio/blk/block_file.hpp"
#include "devices/virtio/blk/test_hung_fuse.hpp"
#include "devices/virtio/blk/test_temp_file.hpp"

using namespace kestrel;
using kestrel::test::direct_io_dir;
using kestrel::test::direct_io_possible;
using kestrel::test::HungFuseFile;
using kestrel::test::pattern;
using kestrel::test::TempImage;
using std::chrono::milliseconds;

namespace {

// Completions land here; drive() plays the event loop by polling the ring fd.
struct Completions {
    std::map<uint64_t, int32_t> res;
    UringBackend::CompletionFn fn() {
        return [this](uint64_t tag, int32_t r) { res[tag] = r; };
    }
};

void drive(UringBackend& b, Completions& c, size_t want) {
    REQUIRE(b.submit_pending().has_value());
    for (int spins = 0; c.res.size() < want && spins < 1000; ++spins) {
        pollfd p{b.event_fd(), POLLIN, 0};
        int n = ::poll(&p, 1, 5000);
        REQUIRE(n == 1);
        b.reap();
    }
    REQUIRE(c.res.size() == want);
}

}  // namespace

TEST_CASE("UringBackend: vectored write then read back, a short batch in one submit") {
    TempImage img(1 << 20);
    auto file = BlockFile::open(img.path(), false, false);
    REQUIRE(file.has_value());
    Completions c;
    auto b = UringBackend::create(file->fd(), 16, c.fn());
    REQUIRE(b.has_value());

    // 7 writes of 4 KiB (below kSubmitChunk), each in 3 uneven pieces, prepared before one
    // submit; the read-back covers all of them plus one more written alone.
    static_assert(UringBackend::kSubmitChunk > 7);
    std::vector<std::vector<uint8_t>> data;
    for (uint8_t i = 0; i < 8; ++i) data.push_back(pattern(4096, i));
    for (uint64_t i = 0; i < 7; ++i) {
        uint8_t* p = data[i].data();
        iovec v[3] = {{p, 1000}, {p + 1000, 24}, {p + 1024, 3072}};
        REQUIRE(b->submit_write(i * 4096 + 8192, v, 100 + i).has_value());
    }
    CHECK(b->pending() == 7);
    CHECK(b->in_flight() == 7);
    uint64_t calls_before = b->stats().submit_calls;
    drive(*b, c, 7);
    CHECK(b->stats().submit_calls - calls_before == 1);  // the whole batch in one syscall
    iovec last{data[7].data(), 4096};
    REQUIRE(b->submit_write(7 * 4096 + 8192, std::span(&last, 1), 107).has_value());
    drive(*b, c, 8);
    for (uint64_t i = 0; i < 8; ++i) CHECK(c.res[100 + i] == 4096);
    CHECK(b->in_flight() == 0);
    for (uint64_t i = 0; i < 8; ++i) CHECK(img.read(8192 + i * 4096, 4096) == data[i]);

    c.res.clear();
    std::vector<uint8_t> back(8 * 4096);
    iovec rv[2] = {{back.data(), 5000}, {back.data() + 5000, back.size() - 5000}};
    REQUIRE(b->submit_read(8192, rv, 7).has_value());
    drive(*b, c, 1);
    CHECK(c.res[7] == 8 * 4096);
    for (size_t i = 0; i < 8; ++i)
        CHECK(std::vector<uint8_t>(back.begin() + static_cast<long>(i * 4096),
                                   back.begin() + static_cast<long>((i + 1) * 4096)) == data[i]);
}

TEST_CASE("UringBackend: a long batch reaches the kernel in chunks of kSubmitChunk") {
    constexpr unsigned kChunk = UringBackend::kSubmitChunk;
    constexpr unsigned kRequests = 2 * kChunk + 3;
    TempImage img(1 << 20);
    auto data = pattern(kRequests * 4096, 5);
    img.write(0, data);
    auto file = BlockFile::open(img.path(), false, false);
    REQUIRE(file.has_value());
    Completions c;
    auto b = UringBackend::create(file->fd(), kRequests, c.fn());
    REQUIRE(b.has_value());
    std::vector<uint8_t> back(kRequests * 4096);
    uint64_t calls_before = b->stats().submit_calls;
    for (uint64_t i = 0; i < kRequests; ++i) {
        iovec v{back.data() + i * 4096, 4096};
        REQUIRE(b->submit_read(i * 4096, std::span(&v, 1), i).has_value());
    }
    // Two full chunks went out while the batch was prepared; the 3 left wait for the end.
    CHECK(b->stats().submit_calls - calls_before == 2);
    CHECK(b->pending() == 3);
    drive(*b, c, kRequests);
    CHECK(b->stats().submit_calls - calls_before >= 3);
    CHECK(b->stats().sqes_submitted == kRequests);
    for (uint64_t i = 0; i < kRequests; ++i) CHECK(c.res[i] == 4096);
    CHECK(back == data);
}

TEST_CASE("UringBackend: flush completes with 0") {
    TempImage img(65536);
    auto file = BlockFile::open(img.path(), false, false);
    REQUIRE(file.has_value());
    Completions c;
    auto b = UringBackend::create(file->fd(), 4, c.fn());
    REQUIRE(b.has_value());
    auto d = pattern(4096, 3);
    iovec v{d.data(), d.size()};
    REQUIRE(b->submit_write(0, std::span(&v, 1), 1).has_value());
    drive(*b, c, 1);
    REQUIRE(b->submit_flush(2).has_value());
    drive(*b, c, 2);
    CHECK(c.res[2] == 0);
}

TEST_CASE("UringBackend: discard punches a hole, write-zeroes zeroes a range") {
    TempImage img(4 << 20);
    auto data = pattern(4 << 20, 9);
    img.write(0, data);
    uint64_t full = img.allocated_blocks();
    REQUIRE(full >= (4 << 20) / 512);

    auto file = BlockFile::open(img.path(), false, false);
    REQUIRE(file.has_value());
    Completions c;
    auto b = UringBackend::create(file->fd(), 8, c.fn());
    REQUIRE(b.has_value());

    REQUIRE(b->submit_discard(1 << 20, 1 << 20, 1).has_value());
    drive(*b, c, 1);
    CHECK(c.res[1] == 0);
    uint64_t after_discard = img.allocated_blocks();
    CHECK(after_discard <= full - (1 << 20) / 512);
    CHECK(img.read(1 << 20, 1 << 20) == std::vector<uint8_t>(1 << 20, 0));
    CHECK(img.read(0, 4096) == std::vector<uint8_t>(data.begin(), data.begin() + 4096));

    // Without unmap the blocks stay allocated; with unmap they may go.
    REQUIRE(b->submit_write_zeroes(2 << 20, 512 * 1024, false, 2).has_value());
    drive(*b, c, 2);
    CHECK(c.res[2] == 0);
    CHECK(img.read(2 << 20, 512 * 1024) == std::vector<uint8_t>(512 * 1024, 0));
    CHECK(img.allocated_blocks() >= after_discard);
    CHECK(img.read((2 << 20) + 512 * 1024, 16) ==
          std::vector<uint8_t>(data.begin() + (2 << 20) + 512 * 1024,
                               data.begin() + (2 << 20) + 512 * 1024 + 16));

    REQUIRE(b->submit_write_zeroes(3 << 20, 1 << 20, true, 3).has_value());
    drive(*b, c, 3);
    CHECK(c.res[3] == 0);
    CHECK(img.read(3 << 20, 1 << 20) == std::vector<uint8_t>(1 << 20, 0));
    CHECK(img.allocated_blocks() < after_discard);
}

TEST_CASE("UringBackend: read past EOF is a short count, errors are -errno") {
    TempImage img(8192);
    auto file = BlockFile::open(img.path(), true, false);
    REQUIRE(file.has_value());
    Completions c;
    auto b = UringBackend::create(file->fd(), 4, c.fn());
    REQUIRE(b.has_value());
    std::vector<uint8_t> buf(8192);
    iovec v{buf.data(), buf.size()};
    REQUIRE(b->submit_read(4096, std::span(&v, 1), 1).has_value());
    REQUIRE(b->submit_read(8192, std::span(&v, 1), 2).has_value());
    REQUIRE(b->submit_write(0, std::span(&v, 1), 3).has_value());  // fd is read-only
    drive(*b, c, 3);
    CHECK(c.res[1] == 4096);
    CHECK(c.res[2] == 0);
    CHECK(c.res[3] == -EBADF);
}

TEST_CASE("UringBackend: in-flight bound and quiesce drops completions") {
    TempImage img(1 << 20);
    auto file = BlockFile::open(img.path(), false, false);
    REQUIRE(file.has_value());
    Completions c;
    auto b = UringBackend::create(file->fd(), 4, c.fn());
    REQUIRE(b.has_value());
    std::vector<uint8_t> buf(4096);
    iovec v{buf.data(), buf.size()};
    for (uint64_t i = 0; i < 4; ++i) REQUIRE(b->submit_read(i * 4096, std::span(&v, 1), i).has_value());
    auto fifth = b->submit_read(0, std::span(&v, 1), 5);
    CHECK_FALSE(fifth.has_value());
    CHECK(b->in_flight() == 4);
    CHECK(b->quiesce(std::chrono::seconds(5)));
    CHECK(b->in_flight() == 0);
    CHECK(c.res.empty());
    // Usable again afterwards.
    REQUIRE(b->submit_read(0, std::span(&v, 1), 9).has_value());
    drive(*b, c, 1);
    CHECK(c.res[9] == 4096);
}

TEST_CASE("UringBackend: O_DIRECT aligned I/O round-trips" * doctest::skip(!direct_io_possible())) {
    REQUIRE_FALSE(direct_io_dir().empty());
    TempImage img(1 << 20, direct_io_dir());
    auto file = BlockFile::open(img.path(), false, true);
    REQUIRE_MESSAGE(file.has_value(), file.error().what());
    Completions c;
    auto b = UringBackend::create(file->fd(), 4, c.fn());
    REQUIRE(b.has_value());
    alignas(4096) static uint8_t wbuf[65536];
    alignas(4096) static uint8_t rbuf[65536];
    auto d = pattern(sizeof wbuf, 4);
    std::copy(d.begin(), d.end(), wbuf);
    iovec w{wbuf, sizeof wbuf};
    REQUIRE(b->submit_write(4096, std::span(&w, 1), 1).has_value());
    drive(*b, c, 1);
    CHECK(c.res[1] == 65536);
    iovec r{rbuf, sizeof rbuf};
    REQUIRE(b->submit_read(4096, std::span(&r, 1), 2).has_value());
    drive(*b, c, 2);
    CHECK(c.res[2] == 65536);
    CHECK(std::equal(rbuf, rbuf + sizeof rbuf, wbuf));
    CHECK(b->submit_write_zeroes(0, 8192, false, 3).has_value());
    drive(*b, c, 3);
    CHECK(c.res[3] == 0);
}

// tmpfs has PUNCH_HOLE but not ZERO_RANGE.
TEST_CASE("UringBackend: write-zeroes falls back to writing zeros without ZERO_RANGE" *
          doctest::skip(::access("/dev/shm", W_OK) != 0)) {
    TempImage img(3 << 20, "/dev/shm");
    auto data = pattern(3 << 20, 5);
    img.write(0, data);
    auto file = BlockFile::open(img.path(), false, false);
    REQUIRE(file.has_value());
    Completions c;
    auto b = UringBackend::create(file->fd(), 4, c.fn());
    REQUIRE(b.has_value());
    // 2.5 MiB: more than two fallback chunks, the last one partial.
    REQUIRE(b->submit_write_zeroes(512, (5 << 20) / 2, false, 1).has_value());
    drive(*b, c, 1);
    CHECK(c.res[1] == 0);
    CHECK(b->stats().zero_range_fallbacks == 1);
    CHECK(img.read(512, (5 << 20) / 2) == std::vector<uint8_t>((5 << 20) / 2, 0));
    CHECK(img.read(0, 512) == std::vector<uint8_t>(data.begin(), data.begin() + 512));
    size_t after = 512 + (5 << 20) / 2;
    CHECK(img.read(after, 512) ==
          std::vector<uint8_t>(data.begin() + static_cast<long>(after),
                               data.begin() + static_cast<long>(after) + 512));
}

TEST_CASE("UringBackend: a short transfer is resubmitted for the remainder") {
    // A pipe returns what it holds: the first readv is short, the rest is read by a
    // resubmission once more bytes arrive (offsets are ignored on pipes).
    int p[2];
    REQUIRE(::pipe(p) == 0);
    Completions c;
    auto b = UringBackend::create(p[0], 2, c.fn());
    REQUIRE(b.has_value());
    auto first = pattern(100, 1);
    auto second = pattern(156, 2);
    REQUIRE(::write(p[1], first.data(), first.size()) == 100);
    std::vector<uint8_t> buf(256);
    iovec v[2] = {{buf.data(), 60}, {buf.data() + 60, 196}};
    REQUIRE(b->submit_read(0, v, 1).has_value());
    REQUIRE(b->submit_pending().has_value());
    pollfd pf{b->event_fd(), POLLIN, 0};
    REQUIRE(::poll(&pf, 1, 5000) == 1);
    b->reap();
    CHECK(c.res.empty());
    CHECK(b->stats().short_resubmits == 1);
    REQUIRE(::write(p[1], second.data(), second.size()) == 156);
    drive(*b, c, 1);
    CHECK(c.res[1] == 256);
    std::vector<uint8_t> want = first;
    want.insert(want.end(), second.begin(), second.end());
    CHECK(buf == want);
    b = std::unexpected(Error{"done", 0});
    ::close(p[0]);
    ::close(p[1]);
}

TEST_CASE("UringBackend: destroying it releases the image at once (registered file, flock)") {
    // The ring's teardown after close runs later in a kernel worker; a registered file would
    // keep the image (and BlockFile's lock) held until then unless the back-end unregisters
    // it first. Without that, about half of these reopenings failed as "in use".
    TempImage img(1 << 20);
    for (int i = 0; i < 20; ++i) {
        auto file = BlockFile::open(img.path(), false, false);
        REQUIRE_MESSAGE(file.has_value(), "round ", i, ": ", file.error().what());
        Completions c;
        auto b = UringBackend::create(file->fd(), 4, c.fn());
        REQUIRE(b.has_value());
        std::vector<uint8_t> back(4096);
        iovec v{back.data(), back.size()};
        REQUIRE(b->submit_read(0, std::span(&v, 1), 1).has_value());
        drive(*b, c, 1);
        CHECK(c.res[1] == 4096);
    }
}

TEST_CASE("UringBackend: quiesce cancels a read that waits for data, and drops it") {
    // A pipe read with nothing to read waits in a poll, which the cancel ends at once.
    int p[2];
    REQUIRE(::pipe(p) == 0);
    Completions c;
    auto b = UringBackend::create(p[0], 2, c.fn());
    REQUIRE(b.has_value());
    std::vector<uint8_t> buf(64, 0);
    iovec v{buf.data(), buf.size()};
    REQUIRE(b->submit_read(0, std::span(&v, 1), 1).has_value());
    REQUIRE(b->submit_pending().has_value());
    CHECK(b->quiesce(std::chrono::seconds(5)));
    CHECK(b->in_flight() == 0);
    CHECK(c.res.empty());
    // The cancelled read took nothing: the next one gets the bytes.
    auto d = pattern(64, 3);
    REQUIRE(::write(p[1], d.data(), d.size()) == 64);
    REQUIRE(b->submit_read(0, std::span(&v, 1), 2).has_value());
    drive(*b, c, 1);
    CHECK(c.res[2] == 64);
    CHECK(buf == d);
    b = std::unexpected(Error{"done", 0});
    ::close(p[0]);
    ::close(p[1]);
}

TEST_CASE("UringBackend: quiesce gives up on a hung read after its limit, and succeeds once it finishes" *
          doctest::skip(!HungFuseFile::available())) {
    HungFuseFile fuse(1 << 20);
    REQUIRE(fuse.ok());
    std::vector<uint8_t> buf(4096, 0);  // outlives the back-end: a late read writes into it
    auto file = BlockFile::open(fuse.path(), true, false);
    REQUIRE_MESSAGE(file.has_value(), file.error().what());
    Completions c;
    auto b = UringBackend::create(file->fd(), 4, c.fn());
    REQUIRE(b.has_value());
    iovec v{buf.data(), buf.size()};
    REQUIRE(b->submit_read(0, std::span(&v, 1), 1).has_value());
    REQUIRE(b->submit_pending().has_value());
    REQUIRE(fuse.wait_for_reads(1, std::chrono::seconds(5)));
    REQUIRE(HungFuseFile::wait_for_blocked_io_worker(std::chrono::seconds(5)));

    auto t0 = std::chrono::steady_clock::now();
    CHECK_FALSE(b->quiesce(milliseconds(300)));  // the cancel cannot stop a read under way
    auto took = std::chrono::steady_clock::now() - t0;
    CHECK(took < milliseconds(300) + std::chrono::seconds(1));
    CHECK(b->in_flight() == 1);

    fuse.release(0x5a);
    CHECK(b->quiesce(std::chrono::seconds(10)));
    CHECK(b->in_flight() == 0);
    CHECK(c.res.empty());  // dropped: no callback
    // The late read still wrote its buffer: why a caller keeps buffers until quiesce succeeds.
    CHECK(buf == std::vector<uint8_t>(4096, 0x5a));

    // Usable again, completions delivered again.
    REQUIRE(b->submit_read(4096, std::span(&v, 1), 2).has_value());
    drive(*b, c, 1);
    CHECK(c.res[2] == 4096);
}

TEST_CASE("UringBackend: destroying it with a hung request returns after kDestroyLimit" *
          doctest::skip(!HungFuseFile::available())) {
    HungFuseFile fuse(1 << 20);  // destroyed last: aborting it ends the leaked ring's read
    REQUIRE(fuse.ok());
    static std::vector<uint8_t> buf(4096);  // the leaked ring may write into it later
    auto file = BlockFile::open(fuse.path(), true, false);
    REQUIRE(file.has_value());
    Completions c;
    auto b = UringBackend::create(file->fd(), 4, c.fn());
    REQUIRE(b.has_value());
    iovec v{buf.data(), buf.size()};
    REQUIRE(b->submit_read(0, std::span(&v, 1), 1).has_value());
    REQUIRE(b->submit_pending().has_value());
    REQUIRE(fuse.wait_for_reads(1, std::chrono::seconds(5)));
    REQUIRE(HungFuseFile::wait_for_blocked_io_worker(std::chrono::seconds(5)));
    auto t0 = std::chrono::steady_clock::now();
    b = std::unexpected(Error{"destroyed", 0});
    auto took = std::chrono::steady_clock::now() - t0;
    CHECK(took < UringBackend::kDestroyLimit + std::chrono::seconds(1));
    CHECK(c.res.empty());
}

TEST_CASE("UringBackend: wait_idle waits for reads to land without reaping them (VM pause)") {
    // A pipe read waits until bytes come: wait_idle must report it still busy, then, once the
    // data is there, report idle with the bytes already in the buffer and no callback yet.
    int p[2];
    REQUIRE(::pipe(p) == 0);
    Completions c;
    auto b = UringBackend::create(p[0], 2, c.fn());
    REQUIRE(b.has_value());
    std::vector<uint8_t> buf(64, 0);
    iovec v{buf.data(), buf.size()};
    REQUIRE(b->submit_read(0, std::span(&v, 1), 7).has_value());
    CHECK_FALSE(b->wait_idle(milliseconds(200)));  // submits, and the read is still waiting
    auto d = pattern(64, 9);
    REQUIRE(::write(p[1], d.data(), d.size()) == 64);
    CHECK(b->wait_idle(std::chrono::seconds(5)));
    CHECK(buf == d);          // the kernel is done with the buffer
    CHECK(c.res.empty());     // but the completion waits for the event loop
    CHECK(b->in_flight() == 1);
    CHECK(b->reap() == 1);
    CHECK(c.res[7] == 64);
    CHECK(b->wait_idle(milliseconds(0)));  // nothing in flight: idle at once
    b = std::unexpected(Error{"done", 0});
    ::close(p[0]);
    ::close(p[1]);
}
