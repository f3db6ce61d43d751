// TapRing: the io_uring (liburing) that carries one tap's traffic: vectored writes of guest
// frames (TX) and reads of host frames into device buffers (RX). Completions are signalled on
// event_fd() (io_uring_register_eventfd), which the owner watches on the EventRegistry.
//
// Reads are RWF_NOWAIT: on an empty tap they complete at once with -EAGAIN. Without it
// io_uring arms an internal poll per read (tun supports FMODE_NOWAIT), and one arriving
// frame woke every posted read, each re-arming its poll: with 16 reads posted that herd cost
// more than the frame (measured, tools/bench-net.sh rx). The owner instead waits for an
// empty tap with one prep_poll_in(). A kernel whose tun lacks FMODE_NOWAIT fails such reads
// with -EOPNOTSUPP; the owner then calls disable_nowait_reads() and posts again. Tap writes
// complete inline during submit.
//
// io_uring runs poll-driven retries as task work of the thread that SUBMITTED the request,
// so the owner submits only from the event-loop thread (never a vCPU thread, whose KVM_RUN
// would return EINTR for it) — except quiesce(), which only cancels.
//
// Not thread-safe: one owner, serialised by the device's lock.
#pragma once

#include <sys/uio.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>

#include "vmm/base/error.hpp"

namespace kestrel {

class TapRing {
public:
    using CompletionFn = std::function<void(uint64_t tag, int32_t res)>;

    // `entries` bounds the requests in flight at once (the owner keeps to it); the CQ is
    // twice that, so it cannot overflow.
    static Result<TapRing> create(int tap_fd, unsigned entries);
    TapRing(TapRing&&) noexcept;
    TapRing& operator=(TapRing&&) noexcept;
    ~TapRing();

    // Prepare one request (reaches the kernel at the next submit()). The iovec array and
    // the memory it points at must stay valid until the request's completion. False when
    // the submission queue is full even after pushing out what was prepared.
    bool prep_writev(const iovec* iov, unsigned count, uint64_t tag);
    bool prep_read(void* buf, uint32_t len, uint64_t tag);
    // One-shot POLLIN on the tap; completes with the poll mask (or -errno).
    bool prep_poll_in(uint64_t tag);
    // Further reads wait in the kernel (internal poll) instead of failing with -EAGAIN.
    void disable_nowait_reads();

    // One io_uring_enter for everything prepared; returns the number submitted or -errno.
    int submit();
    unsigned prepared() const;

    int event_fd() const;
    // Drains the eventfd counter (call before reap when woken by it).
    void clear_event();
    // Delivers every completion in the CQ; returns how many.
    unsigned reap(const CompletionFn& fn);

    // Cancels every outstanding request and waits until the kernel has finished with all of
    // them, dropping their completions. False if some were still outstanding after `limit`:
    // the caller must then keep the buffers they use alive (leak them) rather than free
    // memory the kernel may still write.
    bool quiesce(std::chrono::milliseconds limit);

    unsigned in_flight() const;
    struct Stats {
        uint64_t submit_calls = 0;
        uint64_t sqes = 0;
    };
    const Stats& stats() const;

private:
    struct State;
    explicit TapRing(std::unique_ptr<State> s);
    std::unique_ptr<State> s_;
};

}  // namespace kestrel
