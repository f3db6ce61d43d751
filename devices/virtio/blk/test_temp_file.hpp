// TempImage: a sparse scratch disk image under $TMPDIR for the blk tests, removed on
// destruction. Test-only helper.
#pragma once

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

namespace kestrel::test {

class TempImage {
public:
    // dir: where to create it; empty = $TMPDIR or /tmp.
    explicit TempImage(uint64_t size_bytes, std::string dir = {}) {
        if (dir.empty()) {
            const char* env = std::getenv("TMPDIR");
            dir = env && *env ? env : "/tmp";
        }
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
