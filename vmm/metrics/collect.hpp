// collect(): walks what kestrel counts into one Snapshot, on the controller thread: each
// vCPU (exits by reason, time in KVM_RUN and in kestrel), each virtio device by its
// configuration id (its MetricVisitor), the console (bytes written, dropped) and the
// process (RSS, threads, CPU time, open fds, io_uring submissions and completions). Every
// source is a relaxed atomic or /proc: no lock of the data path is taken.
#pragma once

#include <cstdint>
#include <string>

#include "vmm/metrics/snapshot.hpp"
#include "vmm/vmm.hpp"

namespace kestrel::metrics {

struct ProcessStats {
    uint64_t rss_bytes = 0;
    uint64_t virtual_bytes = 0;
    uint64_t threads = 0;
    uint64_t open_fds = 0;
    uint64_t cpu_ns = 0;  // user + system
};
ProcessStats read_process_stats();

// The KVM_EXIT_* reason as a label value ("hlt", "io_in"...), "exit<N>" for ones without a name.
std::string exit_reason_name(uint32_t reason);

// `vmm` may be null (before InstanceStart): process values only.
Snapshot collect(const VmmMetricSources* vmm, const ProcessStats& process);

}  // namespace kestrel::metrics
