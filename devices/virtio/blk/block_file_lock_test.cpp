// BlockFile's refusals and QEMU-compatible image locks (image_lock.hpp), checked against
// the lock bytes themselves, a second process, and a real QEMU when one is installed.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>

#include "devices/virtio/blk/block_file.hpp"
#include "devices/virtio/blk/image_lock.hpp"
#include "devices/virtio/blk/test_temp_file.hpp"

using namespace kestrel;
using kestrel::test::TempImage;

namespace {

bool contains(const std::string& s, std::string_view what) { return s.find(what) != std::string::npos; }

// Whether anyone holds a lock on byte `offset`. The probe is a fresh open file description,
// so OFD locks of this process's own BlockFiles count as well.
bool byte_held(const std::string& path, long offset) {
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    REQUIRE(fd >= 0);
    struct flock fl {};
    fl.l_type = F_WRLCK;
    fl.l_whence = SEEK_SET;
    fl.l_start = offset;
    fl.l_len = 1;
    REQUIRE(::fcntl(fd, F_OFD_GETLK, &fl) == 0);
    ::close(fd);
    return fl.l_type != F_UNLCK;
}

std::string held_bytes(const std::string& path) {
    std::string out;
    for (long b : {0L, 100L, 101L, 102L, 103L, 200L, 201L, 202L, 203L})
        if (byte_held(path, b)) out += (out.empty() ? "" : " ") + std::to_string(b);
    return out;
}

struct Run {
    int status = -1;
    std::string output;
};

// Runs a shell command, stdout and stderr together.
Run run(const std::string& cmd) {
    Run r;
    FILE* p = ::popen((cmd + " 2>&1").c_str(), "r");
    REQUIRE(p != nullptr);
    std::array<char, 512> buf;
    while (size_t n = std::fread(buf.data(), 1, buf.size(), p)) r.output.append(buf.data(), n);
    int st = ::pclose(p);
    r.status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    return r;
}

// No doctest assertion inside: it runs at static initialisation (a doctest::skip decorator).
bool have_qemu() { return std::system("command -v qemu-system-x86_64 > /dev/null 2>&1") == 0; }

// A QEMU with the image on a virtio-blk device (what a guest's disk is), stopped before
// the first instruction (-S; no KVM needed). It opens the image, takes its locks, then
// reads `quit` from its monitor: exit 0 means it accepted the image.
Run qemu_open(const std::string& path, bool read_only) {
    return run("echo quit | timeout 60 qemu-system-x86_64 -M q35 -nodefaults -display none -S "
               "-monitor stdio -drive file=" + path + ",format=raw,if=none,id=d" +
               (read_only ? ",readonly=on" : "") + " -device virtio-blk-pci,drive=d");
}

}  // namespace

TEST_CASE("image lock: QEMU's byte layout for read-only and read-write disks") {
    TempImage img(4096);
    {
        auto rw = BlockFile::open(img.path(), false, false);
        REQUIRE(rw.has_value());
        // consistent-read and write held, write not shared: what QEMU's virtio-blk holds.
        CHECK(held_bytes(img.path()) == "100 101 201");
    }
    CHECK(held_bytes(img.path()) == "");  // released with the fd
    auto ro = BlockFile::open(img.path(), true, false);
    REQUIRE(ro.has_value());
    CHECK(held_bytes(img.path()) == "100 201");
}

TEST_CASE("image lock: readers share, a writer excludes everyone, in either order") {
    TempImage img(8192);
    {
        auto r1 = BlockFile::open(img.path(), true, false);
        auto r2 = BlockFile::open(img.path(), true, false);
        REQUIRE(r1.has_value());
        REQUIRE(r2.has_value());
        auto w = BlockFile::open(img.path(), false, false);
        REQUIRE_FALSE(w.has_value());
        CHECK(contains(w.error().what(), "is in use"));
        CHECK(contains(w.error().what(), "lets nobody else write it"));
    }
    auto w = BlockFile::open(img.path(), false, false);
    REQUIRE(w.has_value());
    for (bool ro : {true, false}) {
        auto second = BlockFile::open(img.path(), ro, false);
        REQUIRE_FALSE(second.has_value());
        CHECK(contains(second.error().what(), "holds a write lock on it"));
    }
    // The failed attempts left nothing behind.
    CHECK(held_bytes(img.path()) == "100 101 201");
}

TEST_CASE("image lock: the message names the process that has the image") {
    TempImage img(4096);
    int ready[2], done[2];
    REQUIRE(::pipe(ready) == 0);
    REQUIRE(::pipe(done) == 0);
    pid_t child = ::fork();
    REQUIRE(child >= 0);
    if (child == 0) {
        auto f = BlockFile::open(img.path(), false, false);
        char c = f ? 'y' : 'n';
        (void)!::write(ready[1], &c, 1);
        (void)!::read(done[0], &c, 1);
        ::_exit(0);
    }
    char c = 0;
    REQUIRE(::read(ready[0], &c, 1) == 1);
    REQUIRE(c == 'y');
    auto second = BlockFile::open(img.path(), true, false);
    char go = 'x';
    (void)!::write(done[1], &go, 1);
    ::waitpid(child, nullptr, 0);
    for (int fd : {ready[0], ready[1], done[0], done[1]}) ::close(fd);
    REQUIRE_FALSE(second.has_value());
    CHECK(contains(second.error().what(), fmt::format("(pid {})", child)));
    CHECK(contains(second.error().what(), "holds a write lock on it"));
}

TEST_CASE("BlockFile: empty images and sizes that are not whole sectors are refused") {
    TempImage empty(0);
    auto e = BlockFile::open(empty.path(), false, false);
    REQUIRE_FALSE(e.has_value());
    CHECK(contains(e.error().what(), "is empty (0 bytes)"));

    TempImage odd(1000);
    auto o = BlockFile::open(odd.path(), true, false);
    REQUIRE_FALSE(o.has_value());
    CHECK(contains(o.error().what(), "is 1000 bytes, not a multiple of 512"));
    CHECK(held_bytes(odd.path()) == "");  // refused before locking

    TempImage whole(1024 * 1024 + 512);
    auto w = BlockFile::open(whole.path(), false, false);
    REQUIRE(w.has_value());
    CHECK(w->sectors() == 2049);
}

// Without QEMU (tools/setup.sh installs it) doctest counts this test as skipped, never passed.
TEST_CASE("image lock: a real QEMU refuses an image kestrel is using, and shares a read-only one" *
          doctest::skip(!have_qemu())) {
    TempImage img(1 << 20);
    {
        auto rw = BlockFile::open(img.path(), false, false);
        REQUIRE(rw.has_value());
        auto q_rw = qemu_open(img.path(), false);
        CHECK_MESSAGE(q_rw.status != 0, q_rw.output);
        CHECK_MESSAGE(contains(q_rw.output, "Failed to get \"write\" lock"), q_rw.output);
        auto q_ro = qemu_open(img.path(), true);
        CHECK_MESSAGE(q_ro.status != 0, q_ro.output);
        CHECK_MESSAGE(contains(q_ro.output, "Failed to get shared \"write\" lock"), q_ro.output);
    }
    {
        auto ro = BlockFile::open(img.path(), true, false);
        REQUIRE(ro.has_value());
        auto q_ro = qemu_open(img.path(), true);
        CHECK_MESSAGE(q_ro.status == 0, q_ro.output);  // two readers
        auto q_rw = qemu_open(img.path(), false);
        CHECK_MESSAGE(q_rw.status != 0, q_rw.output);
        CHECK_MESSAGE(contains(q_rw.output, "Failed to get \"write\" lock"), q_rw.output);
    }
    // Nothing held any more: QEMU takes it read-write.
    auto q_free = qemu_open(img.path(), false);
    CHECK_MESSAGE(q_free.status == 0, q_free.output);
}
