// UringBackend: one io_uring (liburing) over one BlockFile fd — a ring per virtqueue, so
// queues never contend. Requests are prepared into the SQ by submit_*() and reach the
// kernel on submit_pending(), or earlier in chunks of a few SQEs when a batch is long (one
// io_uring_enter per chunk; see kSubmitChunk). Completions make event_fd() (the ring's own
// fd) readable; the owner watches it on the EventRegistry and calls reap(), which
// delivers (tag, res) per finished request.
//
// Completion contract, res passed to the CompletionFn:
//   read/write: total bytes transferred (>= 0) or -errno. Short transfers are resubmitted
//     for the remainder (a file may return less than asked, e.g. io-wq partial I/O); the
//     request completes short only when the kernel returns 0 (EOF: the file shrank under
//     us) — callers treat res != requested length as an I/O error.
//   flush / discard / write_zeroes: 0 or -errno.
// EAGAIN/EINTR results are retried transparently.
//
// Threads: not thread-safe; one owner thread (the event loop) or an external lock.
#pragma once

#include <sys/uio.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>

#include "vmm/base/error.hpp"

namespace kestrel {

class UringBackend {
public:
    // A long batch of requests reaches the kernel in chunks of this many SQEs instead of in
    // one io_uring_enter at its end: one enter plugs all its requests and the disk sees none
    // of them until the last is prepared, so a driver that refills 32 slots at once kept the
    // disk idle for the whole preparation and then got its completions back in one burst
    // (lock-step). Measured on the bench host, 4 KiB O_DIRECT random reads at QD32:
    // one enter per batch 95-120k IOPS, chunks of 4/8/16 114-141k/114-135k/110-131k (fio
    // 103-114k in the same rounds); page-cache QD32 loses ~10% (460k -> 410k, fio 200-220k).
    static constexpr unsigned kSubmitChunk = 8;

    using CompletionFn = std::function<void(uint64_t tag, int32_t res)>;

    // A request's iovec array is kept for the next request of its slot up to this many
    // entries; a longer one is freed when the request completes, so what the back-end holds
    // is bounded by what is in flight, not by the longest request a slot ever carried.
    static constexpr size_t kRetainedIovecs = 64;
    // The destructor waits this long for outstanding requests (after cancelling them), then
    // leaks the ring rather than let the kernel write into freed memory (logged).
    static constexpr std::chrono::milliseconds kDestroyLimit{2000};

    // max_in_flight bounds requests submitted but not yet completed; the ring's CQ is sized
    // so it can never overflow with that many outstanding (plus quiesce's cancel request).
    static Result<UringBackend> create(int fd, unsigned max_in_flight, CompletionFn on_complete);

    UringBackend(UringBackend&&) noexcept;
    UringBackend& operator=(UringBackend&&) noexcept;
    ~UringBackend();

    // The iovecs are copied; the memory they point at must stay valid until completion.
    Result<void> submit_read(uint64_t offset, std::span<const iovec> iov, uint64_t tag);
    Result<void> submit_write(uint64_t offset, std::span<const iovec> iov, uint64_t tag);
    // fdatasync: data plus the metadata needed to read it back (allocation, size), which
    // is what a virtio-blk FLUSH must make durable (virtio 1.2 §5.2.6.1).
    Result<void> submit_flush(uint64_t tag);
    // fallocate(PUNCH_HOLE | KEEP_SIZE): range reads back zeros, space is freed.
    Result<void> submit_discard(uint64_t offset, uint64_t len, uint64_t tag);
    // unmap: PUNCH_HOLE | KEEP_SIZE. Otherwise ZERO_RANGE | KEEP_SIZE (blocks stay
    // allocated); where the file system lacks ZERO_RANGE (EOPNOTSUPP) the range is written
    // with zeros from a shared buffer instead, in chunks.
    Result<void> submit_write_zeroes(uint64_t offset, uint64_t len, bool unmap, uint64_t tag);

    // Hands every prepared SQE not yet submitted to the kernel in one io_uring_submit.
    Result<void> submit_pending();

    // Readable (level-triggered) while completions wait to be reaped.
    int event_fd() const;
    // Delivers every available completion, which makes event_fd() quiet again; returns how
    // many requests completed. Resubmissions it makes are submitted before returning. Also
    // right after a submit, for page-cache hits that completed inside it.
    unsigned reap();
    // Blocks until at least one CQE is available (or nothing is in flight), then reaps.
    Result<unsigned> wait_and_reap();
    // Stops delivering completions (from now on every completion is dropped, no callback),
    // hands anything prepared to the kernel and asks it to cancel every outstanding request
    // (IORING_ASYNC_CANCEL_ANY). Cancelling helps where the kernel can (a request waiting
    // for a poll, an io-wq worker in an interruptible wait); a regular-file read or write
    // already under way cannot be cancelled and still runs to its end. Idempotent.
    void start_quiesce();
    // start_quiesce(), then waits up to `limit` for every outstanding request to finish.
    // True when none is left: the kernel no longer touches any buffer the requests named.
    // False when some are still running after `limit` (a hung backing store: a FUSE daemon
    // that never answers, a dead NFS server): the kernel may write into their buffers at
    // any later time, so the caller must keep those buffers, and this back-end, alive
    // until a later quiesce() returns true. Completions stay dropped until then.
    bool quiesce(std::chrono::milliseconds limit);

    // Waits up to `limit` until every submitted request has completed in the kernel, without
    // reaping: their completions are handled by the next reap() (VM pause: the guest's
    // buffers are no longer written, the used ring is not yet touched).
    bool wait_idle(std::chrono::milliseconds limit);
    // Requests from now on go to `fd` (PATCH /drives swapping a disk's image). Only between
    // requests: refused while any is prepared or in flight.
    Result<void> replace_file(int fd);
    unsigned in_flight() const;
    // SQEs prepared but not yet submitted.
    unsigned pending() const;

    struct Stats {
        uint64_t submit_calls = 0;      // io_uring_submit syscalls
        uint64_t sqes_submitted = 0;
        uint64_t short_resubmits = 0;
        uint64_t zero_range_fallbacks = 0;
    };
    const Stats& stats() const;

private:
    struct State;
    explicit UringBackend(std::unique_ptr<State> s);
    std::unique_ptr<State> s_;
};

}  // namespace kestrel
