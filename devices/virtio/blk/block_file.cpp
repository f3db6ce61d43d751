#include "devices/virtio/blk/block_file.hpp"

#include <fcntl.h>
#include <linux/fs.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/stat.h>

#include "vmm/base/log.hpp"

namespace kestrel {

Result<BlockFile> BlockFile::open(const std::string& path, bool read_only, bool direct) {
    int flags = (read_only ? O_RDONLY : O_RDWR) | O_CLOEXEC;
    if (direct) flags |= O_DIRECT;
    int raw = ::open(path.c_str(), flags);
    if (raw < 0) {
        int e = errno;
        if (e == ENOENT) return fail("disk image '{}' does not exist", path);
        if (e == EISDIR) return fail("disk image '{}' is a directory", path);
        if (!read_only && (e == EACCES || e == EROFS || e == EPERM))
            return fail_errno("disk image '{}' cannot be opened read-write (open it read-only?)", path);
        if (direct && e == EINVAL)
            return fail("disk image '{}': the file system does not support O_DIRECT", path);
        errno = e;
        return fail_errno("cannot open disk image '{}'", path);
    }
    UniqueFd fd(raw);

    struct stat st;
    if (::fstat(fd.get(), &st) < 0) return fail_errno("cannot stat disk image '{}'", path);
    uint64_t size = 0;
    bool blkdev = false;
    if (S_ISDIR(st.st_mode)) return fail("disk image '{}' is a directory", path);
    if (S_ISREG(st.st_mode)) {
        size = static_cast<uint64_t>(st.st_size);
    } else if (S_ISBLK(st.st_mode)) {
        blkdev = true;
        if (::ioctl(fd.get(), BLKGETSIZE64, &size) < 0)
            return fail_errno("cannot size block device '{}'", path);
    } else {
        return fail("disk image '{}' is neither a regular file nor a block device", path);
    }

    if (::flock(fd.get(), (read_only ? LOCK_SH : LOCK_EX) | LOCK_NB) < 0) {
        if (errno == EWOULDBLOCK) return fail("disk image '{}' is in use by another process", path);
        return fail_errno("cannot lock disk image '{}'", path);
    }
    if (size % kSectorSize != 0)
        log::warn("disk image '{}': size {} is not a multiple of {}; the last {} bytes are not visible",
                  path, size, kSectorSize, size % kSectorSize);
    return BlockFile(std::move(fd), path, read_only, direct, blkdev, size);
}

bool BlockFile::is_direct_aligned(uint64_t offset, std::span<const iovec> iov) {
    if (offset % kDirectAlignment != 0) return false;
    for (const iovec& v : iov) {
        if (reinterpret_cast<uintptr_t>(v.iov_base) % kDirectAlignment != 0) return false;
        if (v.iov_len % kDirectAlignment != 0) return false;
    }
    return true;
}

}  // namespace kestrel
