#include "devices/virtio/blk/block_file.hpp"

#include <doctest/doctest.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "devices/virtio/blk/test_temp_file.hpp"

using namespace kestrel;
using kestrel::test::TempImage;

TEST_CASE("BlockFile: size in whole sectors, flags kept") {
    TempImage img(1024 * 1024 + 512);  // odd sizes are refused: block_file_lock_test.cpp
    auto f = BlockFile::open(img.path(), false, false);
    REQUIRE(f.has_value());
    CHECK(f->size_bytes() == 1024 * 1024 + 512);
    CHECK(f->sectors() == 2049);
    CHECK_FALSE(f->read_only());
    CHECK_FALSE(f->direct());
    CHECK(f->fd() >= 0);
}

TEST_CASE("BlockFile: clear errors for missing file and directory") {
    auto missing = BlockFile::open("/nonexistent/kestrel/disk.img", false, false);
    REQUIRE_FALSE(missing.has_value());
    CHECK(missing.error().what().find("does not exist") != std::string::npos);

    for (bool ro : {true, false}) {
        auto dir = BlockFile::open("/tmp", ro, false);
        REQUIRE_FALSE(dir.has_value());
        CHECK(dir.error().what().find("is a directory") != std::string::npos);
    }
    auto chr = BlockFile::open("/dev/null", true, false);
    REQUIRE_FALSE(chr.has_value());
    CHECK(chr.error().what().find("neither a regular file nor a block device") != std::string::npos);
}

namespace {
// Sets or clears FS_IMMUTABLE_FL (root ignores mode bits; the immutable attribute stops even
// root from writing). False when the file system has no such attribute.
bool set_immutable(const std::string& path, bool on) {
    int fd = ::open(path.c_str(), O_RDONLY);
    int attr = 0;
    bool ok = fd >= 0 && ::ioctl(fd, FS_IOC_GETFLAGS, &attr) == 0;
    attr = on ? (attr | FS_IMMUTABLE_FL) : (attr & ~FS_IMMUTABLE_FL);
    ok = ok && ::ioctl(fd, FS_IOC_SETFLAGS, &attr) == 0;
    if (fd >= 0) ::close(fd);
    return ok;
}
// Whether this process can make a file it cannot write: mode bits do it for a user, root
// needs the immutable attribute. Otherwise the test below is counted as skipped.
bool can_make_read_only() {
    if (::geteuid() != 0) return true;
    TempImage probe(4096);
    return set_immutable(probe.path(), true) && set_immutable(probe.path(), false);
}
}  // namespace

TEST_CASE("BlockFile: read-write open of a read-only file fails, read-only open works" *
          doctest::skip(!can_make_read_only())) {
    TempImage img(4096);
    const bool immutable = ::geteuid() == 0;
    if (immutable) REQUIRE(set_immutable(img.path(), true));
    else REQUIRE(::chmod(img.path().c_str(), 0444) == 0);
    auto rw = BlockFile::open(img.path(), false, false);
    auto ro = BlockFile::open(img.path(), true, false);
    if (immutable) REQUIRE(set_immutable(img.path(), false));
    REQUIRE_FALSE(rw.has_value());
    CHECK(rw.error().what().find("cannot be opened read-write") != std::string::npos);
    REQUIRE(ro.has_value());
    CHECK(ro->read_only());
    CHECK(ro->sectors() == 8);
}

TEST_CASE("BlockFile: a second writer is refused, readers share") {
    TempImage img(4096);
    {
        auto first = BlockFile::open(img.path(), false, false);
        REQUIRE(first.has_value());
        auto second = BlockFile::open(img.path(), false, false);
        REQUIRE_FALSE(second.has_value());
        CHECK(second.error().what().find("in use") != std::string::npos);
        auto reader = BlockFile::open(img.path(), true, false);
        CHECK_FALSE(reader.has_value());
    }
    auto r1 = BlockFile::open(img.path(), true, false);
    auto r2 = BlockFile::open(img.path(), true, false);
    CHECK(r1.has_value());
    CHECK(r2.has_value());
}

TEST_CASE("BlockFile: O_DIRECT open" * doctest::skip(!kestrel::test::direct_io_possible())) {
    REQUIRE_FALSE(kestrel::test::direct_io_dir().empty());
    TempImage img(8192, kestrel::test::direct_io_dir());
    auto f = BlockFile::open(img.path(), false, true);
    REQUIRE_MESSAGE(f.has_value(), f.error().what());
    CHECK(f->direct());
    CHECK((::fcntl(f->fd(), F_GETFL) & O_DIRECT) != 0);
}

TEST_CASE("BlockFile: the O_DIRECT alignment rule") {
    alignas(4096) static uint8_t buf[8192];
    iovec good[2] = {{buf, 512}, {buf + 4096, 1024}};
    CHECK(BlockFile::is_direct_aligned(512, good));
    CHECK_FALSE(BlockFile::is_direct_aligned(100, good));
    iovec bad_addr[1] = {{buf + 8, 512}};
    CHECK_FALSE(BlockFile::is_direct_aligned(0, bad_addr));
    iovec bad_len[1] = {{buf, 100}};
    CHECK_FALSE(BlockFile::is_direct_aligned(0, bad_len));
}
