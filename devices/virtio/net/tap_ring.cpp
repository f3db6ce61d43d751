#include "devices/virtio/net/tap_ring.hpp"

#include <liburing.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "devices/metrics.hpp"
#include "devices/virtio/ring_file.hpp"
#include "vmm/base/fd.hpp"
#include "vmm/base/log.hpp"

namespace kestrel {

namespace {
// user_data of our own cancel requests; device tags never use it.
constexpr uint64_t kCancelTag = ~uint64_t{0};
// Position argument for a tap: a character device without positions ignores it; -1 says so.
constexpr uint64_t kNoOffset = ~uint64_t{0};
}  // namespace

struct TapRing::State {
    io_uring ring{};
    bool ring_ok = false;
    RingFile file;  // the tap
    bool nowait_reads = true;
    UniqueFd efd;
    unsigned in_flight = 0;  // device requests prepared and not yet completed
    Stats stats;

    ~State() {
        if (!ring_ok) return;
        if (in_flight > 0 && !quiesce(std::chrono::seconds(5))) {
            // The kernel may still write into buffers owned by whoever made the requests;
            // closing the ring would not wait for that. Leak the ring rather than risk it.
            log::error("tap io_uring: {} requests would not finish; leaking the ring", in_flight);
            return;
        }
        file.unregister(ring);  // synchronously: see RingFile
        io_uring_queue_exit(&ring);
    }

    io_uring_sqe* get_sqe() {
        if (io_uring_sqe* sqe = io_uring_get_sqe(&ring)) return sqe;
        submit();
        return io_uring_get_sqe(&ring);
    }

    // After prep_*: names the registered file when there is one.
    void finish_sqe(io_uring_sqe* sqe, uint64_t tag) {
        file.mark(sqe);
        io_uring_sqe_set_data64(sqe, tag);
        in_flight++;
    }

    int submit() {
        if (io_uring_sq_ready(&ring) == 0) return 0;
        int n = io_uring_submit(&ring);
        stats.submit_calls++;
        if (n > 0) stats.sqes += static_cast<uint64_t>(n);
        io_uring_totals().submitted(n);
        return n;
    }

    // Visits and consumes every CQE; cancel-request completions are not device requests.
    template <class F>
    unsigned drain(F&& fn) {
        unsigned n = 0;
        io_uring_cqe* cqe;
        while (io_uring_peek_cqe(&ring, &cqe) == 0) {
            uint64_t tag = cqe->user_data;
            int32_t res = cqe->res;
            io_uring_cqe_seen(&ring, cqe);
            io_uring_totals().completed(1);
            if (tag == kCancelTag) continue;
            in_flight--;
            n++;
            fn(tag, res);
        }
        return n;
    }

    bool quiesce(std::chrono::milliseconds limit) {
        auto deadline = std::chrono::steady_clock::now() + limit;
        submit();  // anything prepared must be in the kernel to be cancelled
        if (in_flight > 0) {
            if (io_uring_sqe* sqe = get_sqe()) {
                io_uring_prep_cancel64(sqe, 0, IORING_ASYNC_CANCEL_ANY);
                io_uring_sqe_set_data64(sqe, kCancelTag);
                submit();
            }
        }
        while (in_flight > 0) {
            drain([](uint64_t, int32_t) {});
            if (in_flight == 0) break;
            if (int r = wait_cqes_until(ring, 1, deadline); r < 0) {
                if (r != -ETIME) log::warn("tap io_uring: waiting for cancelled requests: {}", std::strerror(-r));
                return false;
            }
        }
        drain([](uint64_t, int32_t) {});  // the cancel request's own CQE
        return true;
    }
};

Result<TapRing> TapRing::create(int tap_fd, unsigned entries) {
    auto s = std::make_unique<State>();
    auto init = [&](unsigned flags) {
        io_uring_params p{};
        p.flags = IORING_SETUP_CQSIZE | flags;
        p.cq_entries = entries * 2 + 2;
        return io_uring_queue_init_params(entries + 1, &s->ring, &p);  // +1: room for a cancel
    };
    // COOP_TASKRUN (Linux 5.19): a completion's task work no longer interrupts our thread with
    // an IPI while it runs; it is done at our next syscall, or wakes us if we sleep in
    // epoll_wait. Every request on this ring is submitted from the event loop (see the
    // header), so nothing waits on it elsewhere. Measured with tools/bench-net.sh rx: +18%
    // frames/s (192k -> 229k) on the PVM bench host, where each such IPI is a VM exit.
    int r = init(IORING_SETUP_COOP_TASKRUN);
    if (r == -EINVAL) r = init(0);  // an older kernel without COOP_TASKRUN
    if (r < 0) {
        errno = -r;
        return fail_errno("io_uring_queue_init ({} entries) for the tap", entries);
    }
    s->ring_ok = true;
    s->file = RingFile(s->ring, tap_fd);
    s->efd.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    if (!s->efd) return fail_errno("eventfd for the tap io_uring");
    r = io_uring_register_eventfd(&s->ring, s->efd.get());
    if (r < 0) {
        errno = -r;
        return fail_errno("io_uring_register_eventfd");
    }
    return TapRing(std::move(s));
}

TapRing::TapRing(std::unique_ptr<State> s) : s_(std::move(s)) {}
TapRing::TapRing(TapRing&&) noexcept = default;
TapRing& TapRing::operator=(TapRing&&) noexcept = default;
TapRing::~TapRing() = default;

bool TapRing::prep_writev(const iovec* iov, unsigned count, uint64_t tag) {
    io_uring_sqe* sqe = s_->get_sqe();
    if (!sqe) return false;
    io_uring_prep_writev(sqe, s_->file.fd(), iov, count, kNoOffset);
    s_->finish_sqe(sqe, tag);
    return true;
}

bool TapRing::prep_read(void* buf, uint32_t len, uint64_t tag) {
    io_uring_sqe* sqe = s_->get_sqe();
    if (!sqe) return false;
    io_uring_prep_read(sqe, s_->file.fd(), buf, len, kNoOffset);
    if (s_->nowait_reads) sqe->rw_flags = RWF_NOWAIT;
    s_->finish_sqe(sqe, tag);
    return true;
}

bool TapRing::prep_poll_in(uint64_t tag) {
    io_uring_sqe* sqe = s_->get_sqe();
    if (!sqe) return false;
    io_uring_prep_poll_add(sqe, s_->file.fd(), POLLIN);
    s_->finish_sqe(sqe, tag);
    return true;
}

void TapRing::disable_nowait_reads() { s_->nowait_reads = false; }

int TapRing::submit() { return s_->submit(); }
unsigned TapRing::prepared() const { return io_uring_sq_ready(&s_->ring); }
int TapRing::event_fd() const { return s_->efd.get(); }

void TapRing::clear_event() {
    uint64_t v;
    // One read returns and zeroes the whole count (not EFD_SEMAPHORE); a second one would
    // only fail with EAGAIN, a wasted syscall per wake-up.
    (void)::read(s_->efd.get(), &v, sizeof v);
}

unsigned TapRing::reap(const CompletionFn& fn) { return s_->drain(fn); }
bool TapRing::quiesce(std::chrono::milliseconds limit) { return s_->quiesce(limit); }
unsigned TapRing::in_flight() const { return s_->in_flight; }
const TapRing::Stats& TapRing::stats() const { return s_->stats; }

}  // namespace kestrel
