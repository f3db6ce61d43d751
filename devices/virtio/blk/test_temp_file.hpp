// TempImage: a sparse scratch disk image under $TMPDIR for the blk tests, removed on
// destruction. direct_io_dir(): a directory whose file system takes O_DIRECT, for the tests
// of the `direct` paths. Test-only helpers.
#pragma once

#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

namespace kestrel::test {

inline std::string temp_root() {
    const char* env = std::getenv("TMPDIR");
    return env && *env ? env : "/tmp";
}

// True when a file in `dir` can be opened with O_DIRECT (tmpfs before Linux 6.6 refuses it
// with EINVAL; so does a FUSE mount without direct_io).
inline bool supports_direct_io(const std::string& dir) {
    std::string tmpl = dir + "/kestrel-odirect-XXXXXX";
    std::vector<char> buf(tmpl.begin(), tmpl.end());
    buf.push_back('\0');
    int fd = ::mkstemp(buf.data());
    if (fd < 0) return false;
    ::close(fd);
    int d = ::open(buf.data(), O_RDWR | O_DIRECT | O_CLOEXEC);
    ::unlink(buf.data());
    if (d < 0) return false;
    ::close(d);
    return true;
}

namespace detail {

// A 64 MiB sparse ext4 image loop-mounted on a fresh directory under temp_root(), for hosts
// whose temporary directory is tmpfs (the nested test host's L1). Unmounted (the loop device
// goes with it: mount -o loop sets autoclear) and removed when the test process exits.
class LoopExt4 {
public:
    LoopExt4() {
        std::string tmpl = temp_root() + "/kestrel-ext4-XXXXXX";
        std::vector<char> buf(tmpl.begin(), tmpl.end());
        buf.push_back('\0');
        if (!::mkdtemp(buf.data())) return;
        base_ = buf.data();
        std::string img = base_ + "/fs.img", mnt = base_ + "/mnt";
        if (::mkdir(mnt.c_str(), 0700) != 0) return;
        int fd = ::open(img.c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
        if (fd < 0) return;
        bool sized = ::ftruncate(fd, 64 << 20) == 0;
        ::close(fd);
        if (!sized) return;
        // mkdtemp names hold only [A-Za-z0-9]: safe to put in a shell command unquoted.
        std::string cmd = "mkfs.ext4 -q -F " + img + " >/dev/null 2>&1 && mount -o loop " + img + " " + mnt +
                          " >/dev/null 2>&1";
        if (std::system(cmd.c_str()) != 0) return;
        mounted_ = true;
        if (supports_direct_io(mnt)) dir_ = mnt;
    }
    ~LoopExt4() {
        if (mounted_) ::umount2((base_ + "/mnt").c_str(), MNT_DETACH);
        if (base_.empty()) return;
        ::unlink((base_ + "/fs.img").c_str());
        ::rmdir((base_ + "/mnt").c_str());
        ::rmdir(base_.c_str());
    }
    const std::string& dir() const { return dir_; }

private:
    std::string base_, dir_;
    bool mounted_ = false;
};

inline bool can_loop_mount() {
    return ::geteuid() == 0 && ::access("/dev/loop-control", R_OK | W_OK) == 0 &&
           std::system("command -v mkfs.ext4 >/dev/null 2>&1") == 0;
}

}  // namespace detail

// Whether direct_io_dir() can give a directory: cheap, for doctest::skip() decorators
// (evaluated when tests register, so it must not mount anything).
inline bool direct_io_possible() {
    static const bool possible = supports_direct_io(temp_root()) || detail::can_loop_mount();
    return possible;
}

// A directory that takes O_DIRECT: $TMPDIR (or /tmp) when it does, else a loop-mounted ext4
// (root only), made on first use. Empty when there is none: tests that need it are marked
// `* doctest::skip(!direct_io_possible())`, so they show as skipped in doctest's summary
// instead of passing without having run; an empty result after direct_io_possible() said
// yes is a failure of the test (REQUIRE it).
inline const std::string& direct_io_dir() {
    static const std::string tmp = supports_direct_io(temp_root()) ? temp_root() : std::string();
    if (!tmp.empty()) return tmp;
    static detail::LoopExt4 loop;
    return loop.dir();
}

class TempImage {
public:
    // dir: where to create it; empty = $TMPDIR or /tmp.
    explicit TempImage(uint64_t size_bytes, std::string dir = {}) {
        if (dir.empty()) dir = temp_root();
        std::string tmpl = dir + "/kestrel-blk-XXXXXX";
        std::vector<char> buf(tmpl.begin(), tmpl.end());
        buf.push_back('\0');
        int fd = ::mkstemp(buf.data());
        if (fd < 0) std::abort();
        path_ = buf.data();
        if (::ftruncate(fd, static_cast<off_t>(size_bytes)) < 0) std::abort();
        ::close(fd);
    }
    ~TempImage() { ::unlink(path_.c_str()); }
    TempImage(const TempImage&) = delete;
    TempImage& operator=(const TempImage&) = delete;

    const std::string& path() const { return path_; }

    // Direct file access for checking what the device did.
    std::vector<uint8_t> read(uint64_t offset, size_t len) const {
        std::vector<uint8_t> out(len);
        int fd = ::open(path_.c_str(), O_RDONLY | O_CLOEXEC);
        ssize_t n = ::pread(fd, out.data(), len, static_cast<off_t>(offset));
        ::close(fd);
        out.resize(n < 0 ? 0 : static_cast<size_t>(n));
        return out;
    }
    void write(uint64_t offset, const std::vector<uint8_t>& data) const {
        int fd = ::open(path_.c_str(), O_WRONLY | O_CLOEXEC);
        if (::pwrite(fd, data.data(), data.size(), static_cast<off_t>(offset)) !=
            static_cast<ssize_t>(data.size()))
            std::abort();
        ::fsync(fd);
        ::close(fd);
    }
    uint64_t allocated_blocks() const {
        struct stat st;
        if (::stat(path_.c_str(), &st) < 0) return 0;
        return static_cast<uint64_t>(st.st_blocks);
    }

private:
    std::string path_;
};

inline std::vector<uint8_t> pattern(size_t len, uint8_t seed) {
    std::vector<uint8_t> v(len);
    for (size_t i = 0; i < len; ++i) v[i] = static_cast<uint8_t>(seed + i * 7 + (i >> 9));
    return v;
}

}  // namespace kestrel::test
