#include "devices/virtio/blk/block_file.hpp"

#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>

#include "devices/virtio/blk/image_lock.hpp"

namespace kestrel {

Result<void> BlockFile::lock() const { return image_lock::acquire(fd_.get(), path_, read_only_); }

Result<void> BlockFile::unlock() const { return image_lock::release(fd_.get()); }

Result<BlockFile> BlockFile::open(const std::string& path, bool read_only, bool direct, bool lock) {
    // A block device is opened O_EXCL: the kernel then refuses it while it is mounted or
    // another O_EXCL user (mkfs, a device mapper target, another VMM) holds it, which no
    // file lock would show. Known before opening so the flag can be chosen.
    struct stat pre;
    const bool want_excl = ::stat(path.c_str(), &pre) == 0 && S_ISBLK(pre.st_mode);
    int flags = (read_only ? O_RDONLY : O_RDWR) | O_CLOEXEC;
    if (direct) flags |= O_DIRECT;
    if (want_excl) flags |= O_EXCL;
    int raw = ::open(path.c_str(), flags);
    if (raw < 0) {
        int e = errno;
        if (e == ENOENT) return fail("disk image '{}' does not exist", path);
        if (e == EISDIR) return fail("disk image '{}' is a directory", path);
        if (want_excl && e == EBUSY)
            return fail("block device '{}' is in use: mounted, or held open exclusively by another "
                        "program (it was opened with O_EXCL)", path);
        if (!read_only && (e == EACCES || e == EROFS || e == EPERM))
            return fail_errno("disk image '{}' cannot be opened read-write (open it read-only?)", path);
        if (direct && e == EINVAL)
            return fail("disk image '{}': the file system does not support O_DIRECT", path);
        errno = e;
        return fail_errno("cannot open disk image '{}'", path);
    }
    UniqueFd fd(raw);
    const auto [size, blkdev] = TRY(usable_size(fd.get(), path));

    // QEMU's lock bytes (image_lock.hpp) rather than flock(2): QEMU and libvirt see them,
    // and they give kestrel-against-kestrel the same answer flock did.
    if (lock) TRY(image_lock::acquire(fd.get(), path, read_only));
    return BlockFile(std::move(fd), path, read_only, direct, blkdev, size);
}

Result<std::pair<uint64_t, bool>> BlockFile::usable_size(int fd, const std::string& path) {
    struct stat st;
    if (::fstat(fd, &st) < 0) return fail_errno("cannot stat disk image '{}'", path);
    uint64_t size = 0;
    if (S_ISDIR(st.st_mode)) return fail("disk image '{}' is a directory", path);
    if (S_ISREG(st.st_mode)) {
        size = static_cast<uint64_t>(st.st_size);
    } else if (S_ISBLK(st.st_mode)) {
        if (::ioctl(fd, BLKGETSIZE64, &size) < 0) return fail_errno("cannot size block device '{}'", path);
    } else {
        return fail("disk image '{}' is neither a regular file nor a block device", path);
    }
    // A guest sees whole 512-byte sectors only: an empty image is a mistake, and an odd
    // tail would be invisible to the guest (and silently lost to it), so both are refused.
    if (size == 0) return fail("disk image '{}' is empty (0 bytes)", path);
    if (size % kSectorSize != 0)
        return fail("disk image '{}' is {} bytes, not a multiple of {} (the virtio-blk sector); "
                    "pad it with truncate -s %{} '{}'", path, size, kSectorSize, kSectorSize, path);
    return std::pair{size, S_ISBLK(st.st_mode)};
}

Result<uint64_t> BlockFile::refresh_size() {
    size_bytes_ = TRY(usable_size(fd_.get(), path_)).first;
    return size_bytes_;
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
