// BlockFile: the host side of one virtio-blk disk — a raw image file (or a host block
// device) opened once, sized in 512-byte sectors, locked against a second writer.
//
// O_DIRECT: when `direct` is set the file bypasses the page cache. The kernel then wants
// offset, length and every buffer address aligned to the logical block size. We assume 512
// (kDirectAlignment; what virtio-blk's sector is and what ext4/xfs on 512e/4Kn-emulating
// disks accept for files); callers check is_direct_aligned() and bounce unaligned guest
// buffers themselves (VirtioBlk does, see bounce_buffer in virtio_blk.cpp).
//
// Refused at open, each with its own message: a missing image, a directory, a size of 0 or
// not a multiple of 512, a block device that is mounted or held (opened O_EXCL), and an
// image another QEMU or kestrel is using (QEMU's OFD byte-range locks, image_lock.hpp:
// read-only disks share an image, a read-write one excludes every other user).
#pragma once

#include <sys/uio.h>

#include <cstdint>
#include <span>
#include <string>
#include <utility>

#include "vmm/base/error.hpp"
#include "vmm/base/fd.hpp"

namespace kestrel {

class BlockFile {
public:
    static constexpr uint64_t kSectorSize = 512;        // virtio 1.2 §5.2.6: sectors are 512 B
    static constexpr uint64_t kDirectAlignment = 512;

    // Without `lock` the image is opened unlocked (a live migration's destination, which
    // lock()s it once the source has let go).
    static Result<BlockFile> open(const std::string& path, bool read_only, bool direct, bool lock = true);
    // QEMU's lock bytes (image_lock.hpp): taken (refused when another user conflicts), and
    // dropped.
    Result<void> lock() const;
    Result<void> unlock() const;

    BlockFile(BlockFile&&) = default;
    BlockFile& operator=(BlockFile&&) = default;

    int fd() const { return fd_.get(); }
    const std::string& path() const { return path_; }
    bool read_only() const { return read_only_; }
    bool direct() const { return direct_; }
    bool is_block_device() const { return is_block_device_; }
    uint64_t size_bytes() const { return size_bytes_; }
    uint64_t sectors() const { return size_bytes_ / kSectorSize; }

    // True when an O_DIRECT transfer of these buffers at `offset` needs no bounce buffer.
    static bool is_direct_aligned(uint64_t offset, std::span<const iovec> iov);

    // The image was resized in place (PATCH /drives naming the drive's own image): its size
    // again, with open()'s checks; on failure the old size stays.
    Result<uint64_t> refresh_size();

private:
    // The size of the open image and whether it is a block device; refused as open()
    // refuses it (empty, not whole sectors, neither a file nor a block device).
    static Result<std::pair<uint64_t, bool>> usable_size(int fd, const std::string& path);

    BlockFile(UniqueFd fd, std::string path, bool ro, bool direct, bool blkdev, uint64_t size)
        : fd_(std::move(fd)), path_(std::move(path)), read_only_(ro), direct_(direct),
          is_block_device_(blkdev), size_bytes_(size) {}

    UniqueFd fd_;
    std::string path_;
    bool read_only_ = false;
    bool direct_ = false;
    bool is_block_device_ = false;
    uint64_t size_bytes_ = 0;
};

}  // namespace kestrel
