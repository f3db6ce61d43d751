// io_uring pieces the blk back-end and the tap ring share.
// RingFile: the one file an io_uring works on (a disk image, a tap), registered with the ring
// (IORING_REGISTER_FILES) so that no request pays the kernel's fget/fput (~3% of a 4 KiB
// page-cache read and of a tap write in the bench host's profiles); the plain fd when the
// kernel refuses.
//
// unregister() before io_uring_queue_exit(): the ring's teardown after close runs later in a
// kernel worker, and until then a registered file stays open — a disk image's flock, a
// single-queue tap's attachment — so a kestrel started right after found it "in use" / busy.
// Unregistering is synchronous.
#pragma once

#include <liburing.h>

#include <algorithm>
#include <cerrno>
#include <chrono>

namespace kestrel {

class RingFile {
public:
    RingFile() = default;
    RingFile(io_uring& ring, int fd) : sqe_fd_(fd) {
        if (io_uring_register_files(&ring, &fd, 1) == 0) {
            fixed_ = true;
            sqe_fd_ = 0;  // index in the registered table
        }
    }

    // What a prep call names; then mark() the SQE.
    int fd() const { return sqe_fd_; }
    void mark(io_uring_sqe* sqe) const {
        if (fixed_) sqe->flags |= IOSQE_FIXED_FILE;
    }
    // Requests from now on name `fd` instead (a disk's image swapped under a running ring;
    // nothing may be in flight). 0, or -errno from IORING_REGISTER_FILES_UPDATE.
    int replace(io_uring& ring, int fd) {
        if (!fixed_) {
            sqe_fd_ = fd;
            return 0;
        }
        int r = io_uring_register_files_update(&ring, 0, &fd, 1);
        return r == 1 ? 0 : r < 0 ? r : -EIO;
    }
    void unregister(io_uring& ring) {
        if (fixed_) io_uring_unregister_files(&ring);
        fixed_ = false;
        sqe_fd_ = -1;
    }

private:
    int sqe_fd_ = -1;
    bool fixed_ = false;
};

// One slice of a bounded wait for `wait_nr` CQEs, which stay in the ring: for the loops that
// re-check their own condition between slices (quiesce, pause). Waits at most 100 ms, so the
// deadline is looked at often. Returns 0 to look again, -ETIME once `deadline` has passed, or
// the ring's error (the ring is unusable: the loop must end, never spin on it).
inline int wait_cqes_until(io_uring& ring, unsigned wait_nr, std::chrono::steady_clock::time_point deadline) {
    auto now = std::chrono::steady_clock::now();
    if (now >= deadline) return -ETIME;
    auto left = std::chrono::duration_cast<std::chrono::nanoseconds>(
        std::min<std::chrono::nanoseconds>(deadline - now, std::chrono::milliseconds(100)));
    __kernel_timespec ts{left.count() / 1000000000, left.count() % 1000000000};
    io_uring_cqe* cqe = nullptr;
    int r = io_uring_wait_cqes(&ring, &cqe, wait_nr, &ts, nullptr);
    return r == -ETIME || r == -EINTR ? 0 : std::min(r, 0);
}

}  // namespace kestrel
