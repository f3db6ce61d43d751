#include "vmm/metrics/collect.hpp"

#include <dirent.h>
#include <linux/kvm.h>
#include <sys/resource.h>

#include <fstream>

#include "devices/virtio/virtio_device.hpp"
#include "vmm/serial_sink.hpp"
#include "vmm/vcpu_loop.hpp"

namespace kestrel::metrics {

namespace {

// A device's MetricVisitor calls become samples of `group`, labelled with the device's id.
class DeviceSamples final : public MetricVisitor {
public:
    DeviceSamples(Snapshot& out, std::string group, std::string device_label, std::string device)
        : out_(out), group_(std::move(group)), label_(std::move(device_label)), device_(std::move(device)) {}

    void counter(std::string_view name, uint64_t value, std::string_view help, int queue) override {
        Sample& s = add(name, help, Type::Counter, queue);
        s.value = value;
    }
    void gauge(std::string_view name, int64_t value, std::string_view help, int queue) override {
        Sample& s = add(name, help, Type::Gauge, queue);
        s.gauge = value;
    }
    void histogram(std::string_view name, const LatencyHistogram::Snapshot& h, std::string_view help,
                   MetricLabel label, int queue) override {
        Sample& s = add(name, help, Type::Histogram, queue);
        s.label_key = label.key;
        s.label_value = label.value;
        s.hist = h;
    }

private:
    Sample& add(std::string_view name, std::string_view help, Type type, int queue) {
        Sample s;
        s.family = "kestrel_" + group_ + "_" + std::string(name);
        s.group = group_;
        s.name = name;
        s.help = help;
        s.type = type;
        s.device_label = label_;
        s.device = device_;
        s.queue = queue;
        out_.push_back(std::move(s));
        return out_.back();
    }
    Snapshot& out_;
    std::string group_, label_, device_;
};

Sample process_sample(std::string family, std::string name, std::string help, Type type, uint64_t v) {
    Sample s;
    s.family = std::move(family);
    s.group = "process";
    s.name = std::move(name);
    s.help = std::move(help);
    s.type = type;
    if (type == Type::Counter) s.value = v;
    else s.gauge = static_cast<int64_t>(v);
    return s;
}

void collect_vcpus(Snapshot& out, const std::vector<const VcpuExitCounters*>& vcpus) {
    for (size_t i = 0; i < vcpus.size(); ++i) {
        const VcpuExitCounters& c = *vcpus[i];
        auto base = [&](std::string name, std::string help, Type type = Type::Counter) {
            Sample s;
            s.family = "kestrel_vcpu_" + name;
            s.group = "vcpu";
            s.name = std::move(name);
            s.help = std::move(help);
            s.type = type;
            s.device_label = "vcpu";
            s.device = std::to_string(i);
            return s;
        };
        auto exits = [&](std::string reason, uint64_t n) {
            Sample s = base("exits", "KVM_RUN exits to kestrel by reason (io and mmio split by direction)");
            s.label_key = "reason";
            s.label_value = std::move(reason);
            s.value = n;
            out.push_back(std::move(s));
        };
        const uint64_t io = load_metric(c.by_reason[KVM_EXIT_IO]), io_in = load_metric(c.io_in);
        const uint64_t mmio = load_metric(c.by_reason[KVM_EXIT_MMIO]), mmio_read = load_metric(c.mmio_read);
        // The four Firecracker counts always; other reasons once seen (most never happen).
        exits("io_in", io_in);
        exits("io_out", io - std::min(io, io_in));
        exits("mmio_read", mmio_read);
        exits("mmio_write", mmio - std::min(mmio, mmio_read));
        for (uint32_t r = 0; r < c.by_reason.size(); ++r) {
            if (r == KVM_EXIT_IO || r == KVM_EXIT_MMIO) continue;
            if (uint64_t n = load_metric(c.by_reason[r])) exits(exit_reason_name(r), n);
        }
        Sample run = base("run_seconds", "time inside KVM_RUN");
        run.unit = Unit::Nanoseconds;
        run.value = load_metric(c.run_ns);
        out.push_back(std::move(run));
        Sample vmm = base("vmm_seconds", "time handling exits in kestrel, between two KVM_RUNs (paused time excluded)");
        vmm.unit = Unit::Nanoseconds;
        vmm.value = load_metric(c.vmm_ns);
        out.push_back(std::move(vmm));
    }
}

}  // namespace

std::string exit_reason_name(uint32_t reason) {
    switch (reason) {
    case KVM_EXIT_UNKNOWN: return "unknown";
    case KVM_EXIT_EXCEPTION: return "exception";
    case KVM_EXIT_IO: return "io";
    case KVM_EXIT_HYPERCALL: return "hypercall";
    case KVM_EXIT_DEBUG: return "debug";
    case KVM_EXIT_HLT: return "hlt";
    case KVM_EXIT_MMIO: return "mmio";
    case KVM_EXIT_IRQ_WINDOW_OPEN: return "irq_window_open";
    case KVM_EXIT_SHUTDOWN: return "shutdown";
    case KVM_EXIT_FAIL_ENTRY: return "fail_entry";
    case KVM_EXIT_INTR: return "intr";
    case KVM_EXIT_SET_TPR: return "set_tpr";
    case KVM_EXIT_TPR_ACCESS: return "tpr_access";
    case KVM_EXIT_NMI: return "nmi";
    case KVM_EXIT_INTERNAL_ERROR: return "internal_error";
    case KVM_EXIT_SYSTEM_EVENT: return "system_event";
    case KVM_EXIT_IOAPIC_EOI: return "ioapic_eoi";
    case KVM_EXIT_HYPERV: return "hyperv";
    case KVM_EXIT_X86_RDMSR: return "x86_rdmsr";
    case KVM_EXIT_X86_WRMSR: return "x86_wrmsr";
    case KVM_EXIT_DIRTY_RING_FULL: return "dirty_ring_full";
    case KVM_EXIT_X86_BUS_LOCK: return "x86_bus_lock";
    default: return "exit" + std::to_string(reason);
    }
}

ProcessStats read_process_stats() {
    ProcessStats p;
    std::ifstream f("/proc/self/status");
    std::string key;
    while (f >> key) {
        uint64_t v = 0;
        if (key == "VmRSS:" && f >> v) p.rss_bytes = v << 10;
        else if (key == "VmSize:" && f >> v) p.virtual_bytes = v << 10;
        else if (key == "Threads:" && f >> v) p.threads = v;
        f.ignore(1 << 12, '\n');
    }
    if (DIR* d = ::opendir("/proc/self/fd")) {
        while (const dirent* e = ::readdir(d))
            if (e->d_name[0] != '.') ++p.open_fds;
        ::closedir(d);
        if (p.open_fds) --p.open_fds;  // the directory's own descriptor
    }
    rusage ru{};
    if (::getrusage(RUSAGE_SELF, &ru) == 0) {
        auto ns = [](const timeval& t) {
            return static_cast<uint64_t>(t.tv_sec) * 1'000'000'000u + static_cast<uint64_t>(t.tv_usec) * 1000u;
        };
        p.cpu_ns = ns(ru.ru_utime) + ns(ru.ru_stime);
    }
    return p;
}

Snapshot collect(const VmmMetricSources* vmm, const ProcessStats& process) {
    Snapshot out;
    if (vmm) {
        collect_vcpus(out, vmm->vcpus);
        for (const auto& d : vmm->devices) {
            std::string kind = d.kind;
            std::string label = kind == "blk" ? "drive" : kind == "net" ? "iface" : "";
            DeviceSamples v(out, kind, label, label.empty() ? "" : d.id);
            d.device->visit_metrics(v);
        }
        if (vmm->serial) {
            DeviceSamples v(out, "serial", "", "");
            v.counter("written_bytes", vmm->serial->written(), "console bytes written to the --serial output", -1);
            v.counter("dropped_bytes", vmm->serial->dropped(),
                      "console bytes dropped: the output did not keep up, failed, or was still behind at exit", -1);
        }
    }
    // Prometheus' standard process_* names (client libraries' process collector) where one exists.
    out.push_back(process_sample("process_resident_memory_bytes", "resident_memory_bytes", "resident set size (VmRSS)",
                                 Type::Gauge, process.rss_bytes));
    out.push_back(process_sample("process_virtual_memory_bytes", "virtual_memory_bytes", "virtual memory size (VmSize)",
                                 Type::Gauge, process.virtual_bytes));
    out.push_back(process_sample("process_open_fds", "open_fds", "open file descriptors", Type::Gauge, process.open_fds));
    Sample cpu = process_sample("process_cpu_seconds", "cpu_seconds", "user and system CPU time of every thread",
                                Type::Counter, process.cpu_ns);
    cpu.unit = Unit::Nanoseconds;
    out.push_back(std::move(cpu));
    out.push_back(process_sample("kestrel_process_threads", "threads", "threads of the kestrel process", Type::Gauge,
                                 process.threads));
    const IoUringTotals& u = io_uring_totals();
    out.push_back(process_sample("kestrel_io_uring_submit_calls", "io_uring_submit_calls",
                                 "io_uring_submit system calls (virtio-blk queues and virtio-net taps)",
                                 Type::Counter, load_metric(u.submit_calls)));
    out.push_back(process_sample("kestrel_io_uring_submissions", "io_uring_submissions",
                                 "io_uring SQEs the kernel took", Type::Counter, load_metric(u.submissions)));
    out.push_back(process_sample("kestrel_io_uring_completions", "io_uring_completions", "io_uring CQEs reaped",
                                 Type::Counter, load_metric(u.completions)));
    return out;
}

}  // namespace kestrel::metrics
