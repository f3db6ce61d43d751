#include "devices/virtio/balloon/virtio_balloon.hpp"

#include <algorithm>
#include <array>
#include <cstring>

#include "devices/virtio/queue/virtq_spec.hpp"
#include "vmm/base/log.hpp"

namespace kestrel {

namespace {
constexpr uint16_t kInflateq = 0, kDeflateq = 1, kReportingq = 2;
constexpr const char* kQueueNames[] = {"inflateq", "deflateq", "reporting queue"};
}  // namespace

uint64_t VirtioBalloon::device_features() const {
    uint64_t f = virtq::kFeatureVersion1 | virtq::kFeatureEventIdx | virtq::kFeatureIndirectDesc;
    if (opts_.deflate_on_oom) f |= kFeatureDeflateOnOom;
    if (opts_.free_page_reporting) f |= kFeaturePageReporting;
    return f;
}

void VirtioBalloon::read_config(uint64_t offset, std::span<uint8_t> data) {
    std::array<uint8_t, 16> cfg{};  // num_pages, actual, free_page_hint_cmd_id, poison_val
    {
        std::lock_guard lock(mu_);
        const uint32_t words[2] = {opts_.target_pages, actual_};  // le32 (x86 is little-endian)
        std::memcpy(cfg.data(), words, sizeof words);
    }
    for (size_t i = 0; i < data.size(); ++i) data[i] = offset + i < cfg.size() ? cfg[offset + i] : 0;
}

void VirtioBalloon::write_config(uint64_t offset, std::span<const uint8_t> data) {
    // Only `actual` (bytes 4..7) is the driver's to write (§5.5.6.1); Linux writes it whole.
    if (offset != 4 || data.size() != 4) return;
    std::lock_guard lock(mu_);
    std::memcpy(&actual_, data.data(), 4);
}

uint32_t VirtioBalloon::actual_pages() const {
    std::lock_guard lock(mu_);
    return actual_;
}

Result<void> VirtioBalloon::activate(ActivateContext ctx) {
    std::lock_guard lock(mu_);
    if (ctx.queues.size() != num_queues())
        return fail("virtio-balloon: {} queues configured, expected {}", ctx.queues.size(), num_queues());
    for (size_t i = 0; i < ctx.queues.size(); ++i) {
        queues_[i].reset();
        // The reporting queue exists only if the driver took the feature (§5.5.2); a driver
        // without it leaves the queue disabled.
        if (i == kReportingq && (!(ctx.acked_features & kFeaturePageReporting) || !ctx.queues[i].ready)) continue;
        auto q = SplitQueue::create(ctx.mem, ctx.queues[i], kQueueSize, ctx.acked_features);
        if (!q) return std::unexpected(context(std::move(q).error(), fmt::format("virtio-balloon {}", kQueueNames[i])));
        queues_[i] = std::move(*q);
    }
    mem_ = &ctx.mem;
    interrupt_ = &ctx.interrupt;
    needs_reset_ = false;
    return {};
}

void VirtioBalloon::queue_notify(uint16_t index) {
    std::lock_guard lock(mu_);
    if (index >= num_queues() || !queues_[index]) {
        log::debug("virtio-balloon: notify for queue {}, which is not in use", index);
        return;
    }
    if (needs_reset_) return;
    process_locked(index);
}

// One inflate/deflate request: le32 page frame numbers of 4 KiB pages (§5.5.6), read in
// pieces. Inflated pages go back to the host, runs of consecutive PFNs in one madvise.
void VirtioBalloon::inflate_or_deflate(const DescriptorChain& chain, bool inflate) {
    std::array<uint32_t, kPfnChunk> pfns;
    uint64_t run_start = 0, run_pages = 0;
    auto flush_run = [&] {
        if (run_pages == 0) return;
        if (auto r = mem_->discard(GuestAddress(run_start * kPageBytes), run_pages * kPageBytes); r) {
            add_metric(metrics_.inflated_pages, run_pages);
        } else {
            add_metric(metrics_.bad_ranges, 1);
            log::debug("virtio-balloon: inflate: {}", r.error().what());
        }
        run_pages = 0;
    };
    for (size_t off = 0; off < chain.readable_bytes();) {
        auto n = chain.read_to(*mem_, std::span(reinterpret_cast<uint8_t*>(pfns.data()), sizeof pfns), off);
        if (!n || *n == 0) break;
        off += *n;
        const size_t count = *n / sizeof(uint32_t);  // a trailing partial PFN is ignored
        if (!inflate) {
            add_metric(metrics_.deflated_pages, count);
            continue;
        }
        for (size_t i = 0; i < count; ++i) {
            if (run_pages > 0 && pfns[i] == run_start + run_pages) {
                ++run_pages;
                continue;
            }
            flush_run();
            run_start = pfns[i];
            run_pages = 1;
        }
        if (*n < sizeof pfns) break;
    }
    flush_run();
}

// One free page report (§5.5.6.7): each buffer of the chain is a range of free guest memory,
// handed back whole. Linux reports page blocks of 2 MiB or more, page-aligned.
void VirtioBalloon::report(const DescriptorChain& chain) {
    add_metric(metrics_.reports, 1);
    for (const Descriptor& d : chain.descriptors()) {
        if (d.len == 0) continue;
        if (auto r = mem_->discard(d.addr, d.len); r) {
            add_metric(metrics_.reported_bytes, d.len);
        } else {
            add_metric(metrics_.bad_ranges, 1);
            log::debug("virtio-balloon: free page report: {}", r.error().what());
        }
    }
}

void VirtioBalloon::process_locked(uint16_t index) {
    SplitQueue& q = *queues_[index];
    bool used_any = false;
    while (!needs_reset_) {
        auto popped = q.pop(*mem_);
        if (!popped) {
            add_metric(metrics_.queue_errors, 1);
            log::warn("virtio-balloon: {} broken, device needs reset: {}", kQueueNames[index], popped.error().what());
            needs_reset_ = true;
            break;
        }
        if (!popped->has_value()) break;
        uint16_t head;
        if (auto* bad = std::get_if<MalformedChain>(&**popped)) {
            add_metric(metrics_.malformed_chains, 1);
            log::debug("virtio-balloon: malformed chain {}: {}", bad->head, bad->error.what());
            head = bad->head;
        } else {
            const auto& chain = std::get<DescriptorChain>(**popped);
            head = chain.head();
            if (index == kReportingq) report(chain);
            else inflate_or_deflate(chain, index == kInflateq);
        }
        // The device writes nothing into the buffers (§5.5.6, §5.5.6.7).
        if (auto r = q.add_used(*mem_, head, 0); !r) {
            add_metric(metrics_.queue_errors, 1);
            log::warn("virtio-balloon: {}: {}", kQueueNames[index], r.error().what());
            needs_reset_ = true;
            break;
        }
        used_any = true;
    }
    if (!used_any) return;
    auto notify = q.should_notify(*mem_);
    if (!notify || *notify) {
        add_metric(metrics_.interrupts, 1);
        interrupt_->signal_queue(index);
    }
}

void VirtioBalloon::reset() {
    std::lock_guard lock(mu_);
    for (auto& q : queues_) q.reset();
    mem_ = nullptr;
    interrupt_ = nullptr;
    needs_reset_ = false;
    actual_ = 0;
}

Result<QueuePositions> VirtioBalloon::settle_queues() {
    std::lock_guard lock(mu_);
    QueuePositions out(num_queues());
    for (uint16_t i = 0; i < num_queues(); ++i) {
        if (!queues_[i]) continue;
        auto pos = queues_[i]->position(0);
        if (!pos) return std::unexpected(context(pos.error(), fmt::format("virtio-balloon {}", kQueueNames[i])));
        out[i] = *pos;
    }
    return out;
}

bool VirtioBalloon::needs_reset() const {
    std::lock_guard lock(mu_);
    return needs_reset_;
}

}  // namespace kestrel
