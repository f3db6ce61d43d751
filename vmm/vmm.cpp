#include "vmm/vmm.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include <cpuid.h>
#include <openssl/evp.h>

#include <algorithm>
#include <array>
#include <condition_variable>
#include <initializer_list>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <pthread.h>

#include <stop_token>
#include <thread>
#include <vector>

#include "boot/acpi/acpi_tables.hpp"
#include "boot/loader/boot_loader.hpp"
#include "boot/x86_layout.hpp"
#include "devices/bus.hpp"
#include "devices/legacy/acpi_pm.hpp"
#include "devices/legacy/cmos_rtc.hpp"
#include "devices/legacy/debug_exit.hpp"
#include "devices/legacy/i8042.hpp"
#include "devices/legacy/ioapic.hpp"
#include "devices/legacy/uart16550.hpp"
#include "devices/pci/pci_root.hpp"
#include "devices/virtio/blk/virtio_blk.hpp"
#include "devices/virtio/net/virtio_net.hpp"
#include "devices/virtio/balloon/virtio_balloon.hpp"
#include "devices/virtio/rng/virtio_rng.hpp"
#include "devices/virtio/vsock/virtio_vsock.hpp"
#include "migration/legacy_state.hpp"
#include "migration/memory_state.hpp"
#include "migration/vcpu_state.hpp"
#include "migration/virtio_state.hpp"
#include "vmm/arch/x86/cpuid.hpp"
#include "vmm/arch/x86/vcpu_setup.hpp"
#include "vmm/console_input.hpp"
#include "vmm/base/log.hpp"
#include "vmm/event_loop.hpp"
#include "vmm/file_image.hpp"
#include "vmm/guest_cmdline.hpp"
#include "vmm/host_resources.hpp"
#include "vmm/kvm/kvm.hpp"
#include "vmm/rate_limits.hpp"
#include "vmm/replacing_file.hpp"
#include "vmm/serial_sink.hpp"
#include "vmm/terminal.hpp"
#include "vmm/vcpu_loop.hpp"
#include "vmm/virtio_wiring.hpp"

namespace kestrel {

namespace {

// Intel requires a TSS and identity-map page for real-mode emulation; put them just
// below the BIOS area at the top of the 32-bit hole, where no RAM or device lives.
constexpr uint64_t kKvmTssAddr = 0xfffb'd000;
constexpr uint64_t kKvmIdentityMapAddr = 0xfffb'c000;

// RAM below the MMIO hole, the rest from 4 GiB up.
std::vector<GuestRegionSpec> ram_layout(uint64_t bytes) {
    if (bytes <= x86::kMmioHoleStart) return {{GuestAddress(0), bytes}};
    return {{GuestAddress(0), x86::kMmioHoleStart},
            {GuestAddress(x86::kMmioHoleEnd), bytes - x86::kMmioHoleStart}};
}

class KvmIrqLine final : public InterruptLine {
public:
    KvmIrqLine(kvm::Vm& vm, uint32_t irq) : vm_(vm), irq_(irq) {}
    void set_level(bool asserted) override {
        if (auto r = vm_.irq_line(irq_, asserted); !r)
            log::error("IRQ {}: {}", irq_, r.error().what());
    }

private:
    kvm::Vm& vm_;
    uint32_t irq_;
};

// Opened with the other host resources; written out by a SerialSink once the loop exists.
Result<SerialOutput> open_serial_output(const SerialTarget& t) {
    switch (t.kind) {
    case SerialTarget::Kind::Stdio: return open_serial_stdout(STDOUT_FILENO);
    case SerialTarget::Kind::File: return open_serial_file(t.path);
    case SerialTarget::Kind::None: break;
    }
    return SerialOutput{};  // no fd: the UART discards what it transmits
}

// Unmaps the images once loaded, so their pages do not stay in kestrel's RSS.
Result<boot::BootEntry> load_guest(GuestMemory& mem, const VmConfig& cfg, HostResources& host,
                                   GuestAddress rsdp) {
    const GuestCmdline cmdline = guest_cmdline(cfg.cmdline);
    if (cmdline.dropped_nopnp)
        log::info("i8042.nopnp dropped from the guest's command line: with it Linux asks for legacy IRQ 1, "
                  "which a hardware-reduced ACPI guest does not have; the i8042 is described in ACPI "
                  "(vmm/guest_cmdline.hpp)");
    auto entry = boot::prepare_boot(
        mem, {host.kernel->bytes(), host.initrd ? host.initrd->bytes() : std::span<const uint8_t>{},
              cmdline.text, rsdp});
    host.kernel.reset();
    host.initrd.reset();
    return entry;
}

// The virtio devices the command line asked for, opened by open_host_resources, in a fixed
// order (PCI slot = order), with their rate limiters set. Disks and nets are kept in `blks`
// and `nets` too, index = their configuration's.
Result<void> add_virtio_devices(const VmConfig& cfg, HostResources& host, VirtioWiring& virtio,
                                std::vector<std::shared_ptr<VirtioBlk>>& blks,
                                std::vector<std::shared_ptr<VirtioNet>>& nets) {
    for (size_t i = 0; i < cfg.disks.size(); ++i) {
        std::shared_ptr<VirtioBlk> blk = std::move(host.disks[i]);
        blk->rate_limiter().update(rate_limits(cfg.disks[i].rate_limiter));
        blks.push_back(blk);
        TRY(virtio.add(std::move(blk), fmt::format("virtio-blk '{}'", cfg.disks[i].path)));
    }
    for (size_t i = 0; i < cfg.nets.size(); ++i) {
        const auto& n = cfg.nets[i];
        std::shared_ptr<VirtioNet> net = std::move(host.nets[i]);
        net->rx_rate_limiter().update(rate_limits(n.rx_rate_limiter));
        net->tx_rate_limiter().update(rate_limits(n.tx_rate_limiter));
        nets.push_back(net);
        TRY(virtio.add(std::move(net), n.fd >= 0 ? fmt::format("virtio-net fd={}", n.fd)
                                                 : fmt::format("virtio-net tap={}", n.tap)));
    }
    if (host.vsock)
        TRY(virtio.add(std::move(host.vsock), fmt::format("virtio-vsock cid {}", cfg.vsock->cid)));
    if (cfg.rng) {
        std::unique_ptr<RateLimiter> limiter;  // Firecracker has no PATCH /entropy: none unless asked
        if (cfg.rng_rate_limiter) limiter = TRY(RateLimiter::create(rate_limits(cfg.rng_rate_limiter)));
        TRY(virtio.add(std::make_shared<VirtioRng>(VirtioRng::getrandom_fill, std::move(limiter)), "virtio-rng"));
    }
    if (cfg.balloon) {
        const BalloonConfig& b = *cfg.balloon;  // amount_mib checked by open_host_resources
        TRY(virtio.add(std::make_shared<VirtioBalloon>(BalloonOptions{b.amount_mib << 8, b.deflate_on_oom,
                                                                      b.free_page_reporting}),
                       "virtio-balloon"));
    }
    return virtio.connect();
}

void log_exit_counters(const std::vector<std::unique_ptr<VcpuThread>>& threads) {
    for (size_t i = 0; i < threads.size(); ++i) {
        std::string line;
        const auto& c = threads[i]->counters().by_reason;
        for (size_t r = 0; r < c.size(); ++r)
            if (uint64_t n = load_metric(c[r])) line += fmt::format(" exit{}={}", r, n);
        log::debug("vCPU {} exits:{}", i, line.empty() ? " none" : line);
    }
}

}  // namespace

struct Vmm::Impl {
    VmConfig cfg;
    HostResources host;
    SerialOutput serial_out;
    std::optional<kvm::System> sys;
    std::optional<GuestMemory> mem;
    std::optional<kvm::Vm> vm;
    bool kernel_irqchip = false;
    VmControl ctl;
    std::unique_ptr<EventLoop> loop;
    Bus pio{"port I/O"};
    Bus mmio{"MMIO"};
    std::unique_ptr<ConsoleInput> console;
    std::unique_ptr<kvm::GsiRouting> routing;
    std::shared_ptr<IoApic> ioapic;
    std::unique_ptr<SerialSink> serial;
    std::shared_ptr<Uart16550> uart;
    std::shared_ptr<I8042> i8042;
    std::shared_ptr<CmosRtc> rtc;
    std::shared_ptr<AcpiPmDevice> acpi_pm;
    std::shared_ptr<PciRoot> pci;
    std::unique_ptr<VirtioWiring> virtio;
    std::vector<std::shared_ptr<VirtioBlk>> blks;  // index = cfg.disks index
    std::vector<std::shared_ptr<VirtioNet>> nets;  // index = cfg.nets index
    std::vector<std::unique_ptr<kvm::Vcpu>> vcpus;
    std::vector<std::unique_ptr<VcpuThread>> threads;
    std::mutex throttle_mu;
    std::jthread throttler;  // under throttle_mu; kicks `threads` (set_cpu_throttle)
    pthread_t loop_thread{};
    bool loop_started = false;
    std::optional<RawTerminal> raw_tty;
    State state = State::Built;
    std::optional<GuestExit> ended;
    // What each vCPU was given by KVM_SET_CPUID2: saved with it, and a restore compares.
    std::vector<std::vector<kvm_cpuid_entry2>> cpuids;
    // The MSRs a saved vCPU state holds (saveable_msrs), found at the first save or load.
    mutable std::optional<std::vector<uint32_t>> msrs;

    // With `from_state` (a snapshot, or an incoming migration) guest RAM gets the guest from
    // elsewhere: no ACPI tables, kernel or boot registers are written. With `mem_fd` (a
    // snapshot's memory file) guest RAM maps that file.
    Result<void> build(int mem_fd = -1, bool from_state = false);
    // `cfg`'s host resources (host_resources.hpp) and the serial output, in the order written.
    Result<void> open_host(bool boot_files, bool incoming) {
        host = TRY(open_host_resources(cfg, [this]() -> Result<void> {
            serial_out = TRY(open_serial_output(cfg.serial));
            return {};
        }, boot_files, incoming));
        return {};
    }
    // Per region, the pages written since the last call: KVM's log of the guest's writes OR
    // kestrel's own (GuestRegion::dirty). Both are cleared. Needs track_dirty_pages.
    Result<std::vector<std::vector<uint64_t>>> take_dirty() const;
    // With track_dirty_pages, what a migration took from the dirty log (it reads the same
    // log) is kept here for the next Diff snapshot, which would otherwise miss those pages.
    mutable std::vector<std::vector<uint64_t>> diff_carry;
    void carry_for_diff(const std::vector<std::vector<uint64_t>>& bits) const {
        if (!cfg.track_dirty_pages) return;
        if (diff_carry.empty()) diff_carry.resize(bits.size());
        for (size_t r = 0; r < bits.size(); ++r) {
            if (diff_carry[r].empty()) diff_carry[r].assign(bits[r].size(), 0);
            for (size_t i = 0; i < bits[r].size(); ++i) diff_carry[r][i] |= bits[r][i];
        }
    }
    // The vCPUs', kvm-clock's and the emulated devices' sections (paused VM).
    Result<void> write_state(migration::StateWriter& w) const;
    // Puts them back from `file`, all or nothing; sections named in `extra` are the
    // caller's, any other unknown one is refused.
    // clock_realtime: a live migration's destination (see migration/vcpu_state.hpp, kvm-clock).
    Result<void> apply_state(const migration::StateFile& file, std::initializer_list<std::string_view> extra,
                             bool clock_realtime = false);
    Result<void> build_devices();
    Result<void> pause_devices();
    // --pit: KVM's PIC, IOAPIC and PIT (migration/vcpu_state.hpp "kvm-irqchip").
    Result<migration::KvmIrqchipState> kernel_irqchip_state() const {
        migration::KvmIrqchipState s;
        for (uint32_t i = 0; i < 3; ++i) s.chips[i] = TRY(vm->get_irqchip(i));
        s.pit = TRY(vm->get_pit2());
        return s;
    }
    Result<void> set_kernel_irqchip_state(const migration::KvmIrqchipState& s) {
        for (const auto& c : s.chips) TRY(vm->set_irqchip(c));
        return vm->set_pit2(s.pit);
    }

    // Drive `id` (its drive_id): its configuration, device (blks) and PCI transport. Disks
    // are the first virtio functions, in cfg.disks order (add_virtio_devices).
    struct Drive {
        DiskConfig* cfg;
        VirtioBlk* blk;
        VirtioPciDevice* pci;
    };
    Result<Drive> drive(std::string_view id);
};

Result<Vmm::Impl::Drive> Vmm::Impl::drive(std::string_view id) {
    for (size_t i = 0; i < cfg.disks.size(); ++i) {
        if (cfg.disks[i].id != id) continue;
        if (i >= blks.size() || !virtio || i >= virtio->devices().size()) break;
        return Drive{&cfg.disks[i], blks[i].get(), virtio->devices()[i].get()};
    }
    return bad_request("drive '{}' does not exist", id);
}

Result<void> Vmm::Impl::build(int mem_fd, bool from_state) {
    auto& kvm_sys = sys.emplace(TRY(kvm::System::open()));
    int max_vcpus = kvm_sys.check_extension(KVM_CAP_MAX_VCPUS);
    if (max_vcpus > 0 && cfg.cpus > static_cast<uint32_t>(max_vcpus))
        return fail("--cpus {}: host KVM allows at most {} vCPUs", cfg.cpus, max_vcpus);
    if (kvm::System::host_is_pvm())
        log::warn("host /dev/kvm is kvm-pvm: the guest runs in KVM's instruction emulator "
                  "(slow; a stock Linux kernel cannot boot here)");

    auto& ram = mem.emplace(TRY(GuestMemory::create(ram_layout(cfg.memory_bytes), mem_fd)));
    const bool restoring = from_state || mem_fd >= 0;
    // Guest RAM above 2 MiB may use transparent huge pages: KVM then maps it 2 MiB at a time
    // (fewer nested page faults and TLB misses; QEMU does the same). The low 2 MiB, where
    // kestrel writes the boot structures and ACPI tables, keeps small pages so a tiny guest
    // stays small. Refusal (THP disabled) is not an error. With huge_pages None all of RAM is
    // MADV_NOHUGEPAGE, also where the host's THP mode is "always": the host then pays for the
    // 4 KiB pages the guest touched, at the cost of more nested page faults (an idle pod VM,
    // nested host: PSS 95 vs 98 MiB, its kernel's boot 5.3 vs 4.4 s).
    for (const auto& r : ram.regions()) {
        constexpr uint64_t kHuge = 2ull << 20;
        const uint64_t skip = r.start().raw < kHuge ? kHuge - r.start().raw : 0;
        if (restoring) continue;
        if (!cfg.huge_pages) (void)::madvise(r.host_base(), r.size(), MADV_NOHUGEPAGE);
        else if (r.size() > skip) (void)::madvise(r.host_base() + skip, r.size() - skip, MADV_HUGEPAGE);
    }
    auto& kvm_vm = vm.emplace(TRY(kvm::Vm::create(kvm_sys)));
    TRY(kvm_vm.set_tss_and_identity_map(kKvmTssAddr, kKvmIdentityMapAddr));
    // Interrupt controllers. By default the split irqchip: local APICs in KVM, the IOAPIC in
    // kestrel (devices/legacy/ioapic.hpp), no 8259. KVM_CREATE_IRQCHIP's PIC+IOAPIC made the
    // first memory slot wait 4-10 ms on the measured host (SRCU work it leaves behind), and
    // Linux under the hardware-reduced ACPI kestrel presents never uses an 8259 or the PIT
    // (acpi_reduced_hw_init: null legacy PIC, no timer_init; kvm-clock and the LAPIC timer).
    // --pit (guests booted with acpi=off, or that poll the PIT) takes the in-kernel PIC,
    // IOAPIC and i8254 PIT, which KVM only offers together.
    kernel_irqchip = cfg.pit;
    if (kernel_irqchip) {
        TRY(kvm_vm.create_irqchip());
        TRY(kvm_vm.create_pit2());
    } else {
        TRY(kvm_vm.create_split_irqchip(kvm::GsiRouting::kIoapicPins));
    }
    // track_dirty_pages (for Diff snapshots): KVM logs the guest's writes, the regions'
    // bitmaps kestrel's own (from here on: the boot writes below count too).
    for (uint32_t slot = 0; slot < ram.regions().size(); ++slot) {
        const auto& r = ram.regions()[slot];
        r.dirty().enable(cfg.track_dirty_pages);
        TRY(kvm_vm.set_user_memory_region(slot, r.start().raw, r.size(), r.host_base(),
                                          cfg.track_dirty_pages ? KVM_MEM_LOG_DIRTY_PAGES : 0));
    }

    const acpi::PciHostConfig pci_host{.ecam_base = x86::kPciEcamStart,
                                       .bus_start = 0,
                                       .bus_end = static_cast<uint8_t>((x86::kPciEcamSize >> 20) - 1),
                                       .mmio32_base = x86::kPciMmio32Start,
                                       .mmio32_size = x86::kPciMmio32Size};
    std::optional<boot::BootEntry> entry;
    if (!restoring) {
        auto rsdp = TRY(acpi::write_acpi_tables(ram, acpi::AcpiConfig{cfg.cpus, pci_host, kernel_irqchip}));
        auto loaded = load_guest(ram, cfg, host, rsdp);
        if (!loaded) return std::unexpected(context(loaded.error(), fmt::format("--kernel '{}'", cfg.kernel)));
        entry = *loaded;
        log::info("kernel entry {:#x} ({}), {} MiB RAM, {} vCPU(s)", entry->entry.raw,
                  entry->mode == boot::EntryMode::Pvh32 ? "PVH 32-bit" : "Linux 64-bit",
                  cfg.memory_bytes >> 20, cfg.cpus);
    }

    loop = TRY(EventLoop::create());
    TRY(build_devices());

    auto supported = TRY(kvm_sys.supported_cpuid());
    for (uint32_t i = 0; i < cfg.cpus; ++i) {
        auto v = std::make_unique<kvm::Vcpu>(TRY(kvm::Vcpu::create(kvm_sys, kvm_vm, i)));
        cpuids.push_back(x86::build_cpuid(supported, i, cfg.cpus));
        TRY(v->set_cpuid(cpuids.back()));
        TRY(x86::setup_common(*v));
        if (i == 0 && entry) TRY(x86::setup_boot_vcpu(*v, ram, *entry));
        vcpus.push_back(std::move(v));
    }
    std::function<void(uint8_t)> on_eoi;
    if (ioapic) on_eoi = [io = ioapic](uint8_t vector) { io->end_of_interrupt(vector); };
    for (auto& v : vcpus) threads.push_back(std::make_unique<VcpuThread>(*v, pio, mmio, ctl, on_eoi));
    return {};
}

Result<void> Vmm::Impl::build_devices() {
    console = std::make_unique<ConsoleInput>(*loop, STDIN_FILENO);
    routing = std::make_unique<kvm::GsiRouting>(*vm, kernel_irqchip);
    std::shared_ptr<InterruptLine> com1_irq, kbd_irq;
    if (kernel_irqchip) {
        com1_irq = std::make_shared<KvmIrqLine>(*vm, x86::kCom1Irq);
        kbd_irq = std::make_shared<KvmIrqLine>(*vm, x86::kI8042KbdIrq);
    } else {
        ioapic = std::make_shared<IoApic>(std::make_shared<kvm::KvmIoapicSink>(*routing, *vm));
        TRY(mmio.insert(x86::kIoapicAddr, IoApic::kMmioSize, ioapic));
        com1_irq = ioapic_line(ioapic, x86::kCom1Irq);  // ISA IRQ n is pin n (no MADT override)
        kbd_irq = ioapic_line(ioapic, x86::kI8042KbdIrq);
    }
    // Before the UART: it transmits into the sink's buffer and never writes to the host itself.
    serial = TRY(SerialSink::start(*loop, std::move(serial_out)));
    uart = std::make_shared<Uart16550>(com1_irq, serial->buffer(), [c = console.get()] { c->on_drained(); });
    console->attach(uart);
    auto reset = [this] { ctl.request({ExitKind::Reset, 0, "guest requested a reset"}); };
    auto poweroff = [this] { ctl.request({ExitKind::PowerOff, 0, "guest powered off"}); };
    uint64_t low_ram = mem->regions()[0].size();
    uint64_t high_ram = mem->regions().size() > 1 ? mem->regions()[1].size() : 0;
    TRY(pio.insert(x86::kCom1Port, 8, uart));
    i8042 = std::make_shared<I8042>(reset, kbd_irq);
    TRY(pio.insert(x86::kI8042DataPort, I8042::kMappingLength, i8042));
    rtc = std::make_shared<CmosRtc>(CmosMemorySizes{low_ram, high_ram});
    TRY(pio.insert(x86::kCmosPort, 2, rtc));
    // Only on request: otherwise any guest could choose kestrel's exit status and make a
    // supervisor believe it powered off or reset. Unmapped, 0xf4 is an unclaimed port.
    if (cfg.debug_exit)
        TRY(pio.insert(x86::kDebugExitPort, 4, std::make_shared<DebugExit>([this](uint32_t code) {
                           ctl.request({ExitKind::DebugExit, static_cast<int>(code),
                                        fmt::format("guest wrote {} to the debug-exit port", code)});
                       })));
    acpi_pm = std::make_shared<AcpiPmDevice>(poweroff, reset);
    TRY(pio.insert(x86::kAcpiSleepControlPort, 3, acpi_pm));

    // PCI: config cycles through 0xCF8 and ECAM, BARs in the 32-bit window; virtio devices.
    pci = PciRoot::create();
    TRY(pio.insert(x86::kPciConfigPort, PciRoot::kConfigIoLength, pci->config_io()));
    TRY(mmio.insert(x86::kPciEcamStart, x86::kPciEcamSize, pci->ecam()));
    TRY(mmio.insert(pci->window().base, pci->window().size, pci->mmio()));
    virtio = std::make_unique<VirtioWiring>(*vm, *routing, *mem, *loop, pci);
    return add_virtio_devices(cfg, host, *virtio, blks, nets);
}

Result<std::unique_ptr<Vmm>> Vmm::build(const VmConfig& cfg) {
    auto d = std::make_unique<Impl>();
    d->cfg = cfg;
    // Every file, device and socket first, in the order written (host_resources.hpp): a bad
    // path is the most common mistake, and it is reported before anything is built.
    TRY(d->open_host(/*boot_files=*/true, /*incoming=*/false));
    // An inherited tap (`--net fd=N`) is named by the kernel (TUNGETIFF): config() reports
    // that name, so GET /vm/config gives a host_dev_name that can be fed back.
    for (size_t i = 0; i < d->cfg.nets.size(); ++i)
        if (d->cfg.nets[i].tap.empty() && d->host.nets[i]) d->cfg.nets[i].tap = d->host.nets[i]->tap_name();
    TRY(d->build());
    return std::unique_ptr<Vmm>(new Vmm(std::move(d)));
}

Vmm::Vmm(std::unique_ptr<Impl> d) : d_(std::move(d)) {}

Vmm::~Vmm() {
    if (d_->state != State::Stopped) stop({ExitKind::Error, 0, "kestrel is shutting down"});
}

Result<void> Vmm::start(bool paused) {
    if (d_->state != State::Built) return not_allowed("the VM has already been started");
    // Asked before their threads exist, the vCPUs park before their first KVM_RUN.
    if (paused)
        for (auto& t : d_->threads) t->pause(std::chrono::milliseconds(0));
    if (d_->cfg.serial.kind == SerialTarget::Kind::Stdio && ::isatty(STDIN_FILENO)) {
        d_->raw_tty.emplace(STDIN_FILENO);
        TRY(d_->console->start());
    }
    VcpuThread::install_kick_handler();
    for (auto& t : d_->threads) t->start();
    d_->state = State::Running;
    auto body = [](void* p) -> void* {
        auto* d = static_cast<Impl*>(p);
        d->loop->run(d->ctl);
        return nullptr;
    };
    if (int e = ::pthread_create(&d_->loop_thread, nullptr, body, d_.get()); e != 0) {
        stop({ExitKind::Error, 0, "cannot start the event-loop thread"});
        errno = e;
        return fail_errno("pthread_create for the event loop");
    }
    d_->loop_started = true;
    if (paused) return pause();
    return {};
}

// Every virtio device finishes the host I/O that would write guest memory (its completions
// wait for resume), on the event loop's own thread, which then parks.
Result<void> Vmm::Impl::pause_devices() {
    const auto deadline = std::chrono::steady_clock::now() + kPauseLimit;
    return loop->pause(
        [this, deadline]() -> Result<void> {
            for (const auto& dev : virtio->devices()) {
                auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                    deadline - std::chrono::steady_clock::now());
                TRY(dev->device().finish_host_io(std::max(left, std::chrono::milliseconds(0))));
            }
            return {};
        },
        kPauseLimit);
}

Result<void> Vmm::pause() {
    if (d_->state == State::Paused) return {};
    if (d_->state != State::Running) return not_allowed("the VM is {}: only a running VM can be paused", state_name(d_->state));
    for (size_t i = 0; i < d_->threads.size(); ++i) {
        if (d_->threads[i]->pause(kPauseLimit)) continue;
        for (auto& t : d_->threads) t->resume();
        return fail("vCPU {} did not leave KVM_RUN within {} ms; the VM keeps running", i, kPauseLimit.count());
    }
    for (auto& v : d_->vcpus)
        if (auto r = v->kvmclock_ctrl(); !r) log::warn("{}", r.error().what());
    if (auto r = d_->pause_devices(); !r) {
        for (auto& t : d_->threads) t->resume();
        return std::unexpected(context(r.error(), "pausing the devices (the VM keeps running)"));
    }
    d_->state = State::Paused;
    log::info("VM paused");
    return {};
}

Result<void> Vmm::resume() {
    if (d_->state == State::Running) return {};
    if (d_->state != State::Paused) return not_allowed("the VM is {}: only a paused VM can be resumed", state_name(d_->state));
    d_->loop->resume();  // devices first: completions held during the pause go out now
    for (auto& t : d_->threads) t->resume();
    d_->state = State::Running;
    log::info("VM resumed");
    return {};
}

GuestExit Vmm::stop(GuestExit why) {
    if (d_->ended) return *d_->ended;
    set_cpu_throttle(0);  // its kicks must end before the vCPU threads do
    d_->ctl.request(std::move(why));  // ignored if the guest already ended it
    if (d_->state == State::Running || d_->state == State::Paused) {
        d_->loop->resume();
        for (auto& t : d_->threads) {
            t->resume();
            t->kick();
        }
        for (auto& t : d_->threads) t->join();
        if (d_->loop_started) {
            // A thread that submitted io_uring requests now stuck in the kernel (a hung NFS or
            // FUSE backing store) cannot finish exiting until they end (devices/virtio/blk/
            // virtio_blk.hpp). Do not wait for it forever: kestrel's own exit kills those
            // requests' workers and ends the process. (A pthread, not std::thread, for the
            // timed join.)
            timespec deadline{};
            ::clock_gettime(CLOCK_REALTIME, &deadline);
            deadline.tv_sec += kLoopJoinLimit.count();
            if (::pthread_timedjoin_np(d_->loop_thread, nullptr, &deadline) != 0) {
                log::warn("the event-loop thread did not end within {} s (host I/O stuck in the kernel); "
                          "leaving it to the process's exit", kLoopJoinLimit.count());
                ::pthread_detach(d_->loop_thread);
            }
            d_->loop_started = false;
        }
    }
    d_->raw_tty.reset();
    // Bounded (SerialSink::kExitGrace) even when the output is stuck: what cannot be written
    // by then is dropped and counted, so a stalled reader never delays the exit further.
    if (d_->serial) d_->serial->finish();
    log_exit_counters(d_->threads);
    if (d_->virtio) d_->virtio->log_metrics();
    d_->state = State::Stopped;
    d_->ended = d_->ctl.wait();
    return *d_->ended;
}

VmControl& Vmm::exits() { return d_->ctl; }
Vmm::State Vmm::state() const { return d_->state; }
const VmConfig& Vmm::config() const { return d_->cfg; }
uint32_t Vmm::vcpu_count() const { return d_->cfg.cpus; }

Result<std::string> Vmm::ram_digest() const {
    if (d_->state != State::Paused) return not_allowed("the guest RAM digest is only taken while the VM is paused");
    std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx(EVP_MD_CTX_new(), EVP_MD_CTX_free);
    if (!ctx || EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr) != 1) return fail("SHA-256 unavailable");
    for (const auto& r : d_->mem->regions())
        if (EVP_DigestUpdate(ctx.get(), r.host_base(), r.size()) != 1) return fail("SHA-256 update failed");
    std::array<unsigned char, EVP_MAX_MD_SIZE> md{};
    unsigned n = 0;
    if (EVP_DigestFinal_ex(ctx.get(), md.data(), &n) != 1) return fail("SHA-256 final failed");
    std::string hex;
    for (unsigned i = 0; i < n; ++i) hex += fmt::format("{:02x}", md[i]);
    return hex;
}

namespace {

// "AuthenticAMD family 25 model 1": the state file's header says what it was taken on.
std::string host_cpu_summary() {
    unsigned a = 0, b = 0, c = 0, d = 0;
    if (!__get_cpuid(0, &a, &b, &c, &d)) return "unknown CPU";
    char vendor[13] = {};
    std::memcpy(vendor, &b, 4);
    std::memcpy(vendor + 4, &d, 4);
    std::memcpy(vendor + 8, &c, 4);
    if (!__get_cpuid(1, &a, &b, &c, &d)) return vendor;
    // SDM vol. 2A CPUID leaf 1 EAX: the extended family/model count only for families 0xf/0x6.
    unsigned family = (a >> 8) & 0xf, model = (a >> 4) & 0xf;
    if (family == 0xf) family += (a >> 20) & 0xff;
    if (family == 0x6 || family >= 0xf) model |= ((a >> 16) & 0xf) << 4;
    return fmt::format("{} family {} model {}", vendor, family, model);
}


// The MSRs saved for every vCPU: KVM's index list (KVM_GET_MSR_INDEX_LIST), sorted (IA32_TSC
// 0x10 before TSC_DEADLINE 0x6e0, as KVM needs them back), minus those this vCPU cannot read
// (features the host CPU lacks). KVM_GET_MSRS stops at the first it cannot read and says how
// many it read: one call per unreadable MSR, not one per MSR (a migration's downtime has it).
Result<std::vector<uint32_t>> saveable_msrs(const kvm::System& sys, const kvm::Vcpu& vcpu) {
    auto list = TRY(sys.msr_index_list());
    std::sort(list.begin(), list.end());
    list.erase(std::unique(list.begin(), list.end()), list.end());
    std::vector<uint32_t> out;
    std::vector<kvm_msr_entry> entries;
    for (size_t at = 0; at < list.size();) {
        entries.assign(list.size() - at, kvm_msr_entry{});
        for (size_t i = 0; i < entries.size(); ++i) entries[i].index = list[at + i];
        const size_t n = TRY(vcpu.count_readable_msrs(entries));
        out.insert(out.end(), list.begin() + static_cast<std::ptrdiff_t>(at),
                   list.begin() + static_cast<std::ptrdiff_t>(at + n));
        at += n + 1;  // past the one it could not read
    }
    return out;
}

Result<migration::VcpuState> capture_vcpu(const kvm::Vcpu& v, const std::vector<uint32_t>& msrs) {
    migration::VcpuState s;
    s.mp_state = TRY(v.get_mp_state());
    s.regs = TRY(v.get_regs());
    s.sregs = TRY(v.get_sregs());
    const auto xsave = TRY(v.get_xsave());
    std::memcpy(s.xsave.data(), xsave.region, sizeof xsave.region);
    s.xcrs = TRY(v.get_xcrs());
    s.debugregs = TRY(v.get_debugregs());
    s.lapic = TRY(v.get_lapic());
    s.msrs = TRY(v.get_msrs(msrs));
    s.events = TRY(v.get_vcpu_events());
    return s;
}

// In the order KVM needs (migration/vcpu_state.hpp).
Result<void> apply_vcpu(kvm::Vcpu& v, const migration::VcpuState& s) {
    TRY(v.set_mp_state(s.mp_state));
    TRY(v.set_regs(s.regs));
    TRY(v.set_sregs(s.sregs));
    kvm::uapi::Xsave xsave{};
    std::memcpy(xsave.region, s.xsave.data(), sizeof xsave.region);
    TRY(v.set_xsave(xsave));
    TRY(v.set_xcrs(s.xcrs));
    TRY(v.set_debugregs(s.debugregs));
    TRY(v.set_lapic(s.lapic));
    TRY(v.set_msrs(s.msrs));
    TRY(v.set_vcpu_events(s.events));
    return {};
}

}  // namespace

Result<void> Vmm::Impl::write_state(migration::StateWriter& w) const {
    using namespace migration;
    // The virtio functions first: settling their queues may complete requests to the guest
    // and raise interrupts, which the vCPUs' LAPIC state below then holds.
    for (size_t i = 0; i < virtio->devices().size(); ++i) {
        auto st = virtio->devices()[i]->save();
        if (!st) return std::unexpected(context(st.error(), virtio_section(static_cast<uint32_t>(i))));
        encode(w.section(virtio_section(static_cast<uint32_t>(i)), kVirtioStateVersion), *st);
    }
    // KVM_GET_XSAVE holds 4 KiB (api.rst §4.42); a VM whose XSAVE state is larger (AMX tiles,
    // which KVM enables only after ARCH_REQ_XCOMP_GUEST_PERM, never asked for here) would lose
    // the rest silently: refuse rather than save it cut (KVM_CAP_XSAVE2 gives the size).
    if (const int xsave = ::ioctl(vm->fd(), KVM_CHECK_EXTENSION, KVM_CAP_XSAVE2);
        xsave > static_cast<int>(sizeof(kvm_xsave)))
        return fail("state: the vCPUs' XSAVE state is {} bytes, more than the {} KVM_GET_XSAVE saves: not supported",
                    xsave, sizeof(kvm_xsave));
    for (size_t i = 0; i < vcpus.size(); ++i) {
        if (!msrs) msrs = TRY(saveable_msrs(*sys, *vcpus[i]));
        VcpuState st = TRY(capture_vcpu(*vcpus[i], *msrs));
        st.cpuid = cpuids[i];
        encode(w.section(vcpu_section(static_cast<uint32_t>(i)), kVcpuStateVersion), st);
    }
    const kvm_clock_data clock = TRY(vm->get_clock());
    encode_kvm_clock(w.section(kKvmClockSection, kKvmClockVersion),
                     {clock.clock, (clock.flags & KVM_CLOCK_REALTIME) ? clock.realtime : 0});
    if (kernel_irqchip) encode(w.section(kKvmIrqchipSection, kKvmIrqchipVersion), TRY(kernel_irqchip_state()));
    encode(w.section(kUartSection, kLegacyStateVersion), uart->save());
    encode(w.section(kRtcSection, kLegacyStateVersion), rtc->save());
    encode(w.section(kI8042Section, kLegacyStateVersion), i8042->save());
    encode(w.section(kAcpiPmSection, kLegacyStateVersion), acpi_pm->save());
    if (ioapic) encode(w.section(kIoapicSection, kLegacyStateVersion), ioapic->save());
    return {};
}

Result<void> Vmm::Impl::apply_state(const migration::StateFile& file, std::initializer_list<std::string_view> extra,
                                    bool clock_realtime) {
    using namespace migration;
    const bool has_ioapic = ioapic != nullptr;
    const size_t ncpus = vcpus.size();
    const size_t nvirtio = virtio->devices().size();
    auto known = [&](const std::string& id) {
        for (std::string_view e : extra)
            if (id == e) return true;
        for (size_t i = 0; i < ncpus; ++i)
            if (id == vcpu_section(static_cast<uint32_t>(i))) return true;
        for (size_t i = 0; i < nvirtio; ++i)
            if (id == virtio_section(static_cast<uint32_t>(i))) return true;
        return id == kKvmClockSection || id == kUartSection || id == kRtcSection || id == kI8042Section ||
               id == kAcpiPmSection || (id == kIoapicSection && has_ioapic) ||
               (id == kKvmIrqchipSection && kernel_irqchip);
    };
    for (const auto& sec : file.sections)
        if (!known(sec.id)) return bad_request("state: section '{}': this VM has no such component", sec.id);
    auto section = [&](const std::string& id) -> Result<const Section*> {
        if (const Section* s = file.find(id)) return s;
        return bad_request("state: no section '{}': this VM has that component", id);
    };
    // Every section decoded before anything changes.
    struct Decoded {
        std::vector<VcpuState> vcpus;
        KvmClockState clock;
        Uart16550::State uart;
        CmosRtc::State rtc;
        I8042::State kbd;
        AcpiPmDevice::State pm;
        std::optional<IoApic::State> io;
        std::optional<KvmIrqchipState> irqchip;
        std::vector<VirtioPciDevice::State> virtio;
    };
    Decoded d;
    for (size_t i = 0; i < ncpus; ++i) {
        d.vcpus.push_back(TRY(decode_vcpu(*TRY(section(vcpu_section(static_cast<uint32_t>(i)))))));
        if (auto diff = cpuid_difference(d.vcpus.back().cpuid, cpuids[i]); !diff.empty())
            return bad_request("state: section '{}': the CPUID it was saved with differs from this host's ({}): "
                               "restore it on a host with the same CPU model and kestrel version",
                               vcpu_section(static_cast<uint32_t>(i)), diff);
    }
    d.clock = TRY(decode_kvm_clock(*TRY(section(kKvmClockSection))));
    d.uart = TRY(decode_uart(*TRY(section(kUartSection))));
    d.rtc = TRY(decode_rtc(*TRY(section(kRtcSection))));
    d.kbd = TRY(decode_i8042(*TRY(section(kI8042Section))));
    d.pm = TRY(decode_acpi_pm(*TRY(section(kAcpiPmSection))));
    if (has_ioapic) d.io = TRY(decode_ioapic(*TRY(section(kIoapicSection))));
    if (kernel_irqchip) d.irqchip = TRY(decode_kvm_irqchip(*TRY(section(kKvmIrqchipSection))));
    for (size_t i = 0; i < nvirtio; ++i)
        d.virtio.push_back(TRY(decode_virtio(*TRY(section(virtio_section(static_cast<uint32_t>(i)))))));

    // What is there now, to put back if a device or KVM refuses a value (reserved bits, an
    // index, a control register KVM rejects): a refused file changes nothing. A VM that has
    // never run (a snapshot's or migration's, thrown away if this fails) needs none of it.
    const bool keep_undo = state != State::Built;
    std::vector<VcpuState> vcpus_before;
    kvm_clock_data clock_before{};
    std::optional<KvmIrqchipState> irqchip_before;
    std::vector<VirtioPciDevice::State> virtio_before;
    if (keep_undo) {
        for (const auto& v : vcpus) {
            if (!msrs) msrs = TRY(saveable_msrs(*sys, *v));
            vcpus_before.push_back(TRY(capture_vcpu(*v, *msrs)));
        }
        clock_before = TRY(vm->get_clock());
        if (kernel_irqchip) irqchip_before = TRY(kernel_irqchip_state());
        for (size_t i = 0; i < nvirtio; ++i) {
            auto st = virtio->devices()[i]->save();
            if (!st) return std::unexpected(context(st.error(), virtio_section(static_cast<uint32_t>(i))));
            virtio_before.push_back(std::move(*st));
        }
    }
    std::vector<std::function<void()>> undo;  // pushed before each step: a half-applied step is undone too
    using Clock = std::chrono::steady_clock;
    const auto t0 = Clock::now();
    auto t_vcpus = t0, t_legacy = t0;  // for the log: where a load's time goes (a migration's downtime)
    auto apply = [&]() -> Result<void> {
        for (size_t i = 0; i < ncpus; ++i) {
            undo.push_back([&, i] { (void)apply_vcpu(*vcpus[i], vcpus_before[i]); });
            if (auto r = apply_vcpu(*vcpus[i], d.vcpus[i]); !r)
                return bad_request("state: section '{}': KVM refused it: {}", vcpu_section(static_cast<uint32_t>(i)),
                                   r.error().message);
        }
        t_vcpus = Clock::now();
        undo.push_back([&] { (void)vm->set_clock(clock_before); });
        kvm_clock_data clock{};
        clock.clock = d.clock.clock_ns;
        if (clock_realtime && d.clock.realtime_ns &&
            (sys->check_extension(KVM_CAP_ADJUST_CLOCK) & KVM_CLOCK_REALTIME)) {
            clock.flags = KVM_CLOCK_REALTIME;
            clock.realtime = d.clock.realtime_ns;
            timespec now{};
            ::clock_gettime(CLOCK_REALTIME, &now);
            const int64_t away = int64_t{now.tv_sec} * 1'000'000'000 + now.tv_nsec - static_cast<int64_t>(clock.realtime);
            log::info("state: kvm-clock advanced by the {:.1f} ms the VM was away (KVM_CLOCK_REALTIME)",
                      std::max<int64_t>(away, 0) / 1e6);
        }
        if (auto r = vm->set_clock(clock); !r)
            return bad_request("state: section '{}': KVM refused it: {}", kKvmClockSection, r.error().message);
        if (d.irqchip) {
            // Before the devices: a restored line level or pending PIT interrupt is KVM's.
            undo.push_back([&] { (void)set_kernel_irqchip_state(*irqchip_before); });
            if (auto r = set_kernel_irqchip_state(*d.irqchip); !r)
                return bad_request("state: section '{}': KVM refused it: {}", kKvmIrqchipSection, r.error().message);
        }
        undo.push_back([&, b = uart->save()] { (void)uart->restore(b); });
        TRY(uart->restore(d.uart));
        undo.push_back([&, b = rtc->save()] { (void)rtc->restore(b); });
        TRY(rtc->restore(d.rtc));
        undo.push_back([&, b = i8042->save()] { (void)i8042->restore(b); });
        TRY(i8042->restore(d.kbd));
        undo.push_back([&, b = acpi_pm->save()] { (void)acpi_pm->restore(b); });
        TRY(acpi_pm->restore(d.pm));
        t_legacy = Clock::now();
        // After the vCPUs: the interrupts a restored function raises land in restored LAPICs.
        for (size_t i = 0; i < nvirtio; ++i) {
            undo.push_back([&, i] { (void)virtio->restore(i, virtio_before[i]); });
            if (auto r = virtio->restore(i, d.virtio[i]); !r)
                return bad_request("state: section '{}': {}", virtio_section(static_cast<uint32_t>(i)), r.error().message);
        }
        if (d.io) TRY(ioapic->restore(*d.io));  // last: nothing after it to undo
        return {};
    }();
    if (!apply) {
        // Putting back what was read from KVM and the devices themselves.
        if (keep_undo)
            for (auto it = undo.rbegin(); it != undo.rend(); ++it) (*it)();
        return std::unexpected(apply.error());
    }
    const auto us = [](Clock::time_point a, Clock::time_point b) {
        return std::chrono::duration_cast<std::chrono::microseconds>(b - a).count();
    };
    log::info("state applied: {} vCPU(s) in {} us, clock, irqchip and legacy devices in {} us, {} virtio function(s) "
              "in {} us", ncpus, us(t0, t_vcpus), us(t_vcpus, t_legacy), nvirtio, us(t_legacy, Clock::now()));
    return {};
}

Result<void> Vmm::save_device_state(const std::string& path) const {
    if (d_->state != State::Paused)
        return not_allowed("device state: the VM is {}; its state is only saved while paused", state_name(d_->state));
    migration::StateWriter w(KESTREL_VERSION, host_cpu_summary());
    TRY(d_->write_state(w));
    auto bytes = TRY(std::move(w).finish());
    if (auto r = write_file_replacing(path, bytes); !r)
        return std::unexpected(context(r.error(), "device state"));
    log::info("device state saved to '{}' ({} bytes)", path, bytes.size());
    return {};
}

Result<void> Vmm::load_device_state(const std::string& path) {
    if (d_->state != State::Paused)
        return not_allowed("device state: the VM is {}; its state is only loaded while paused", state_name(d_->state));
    auto image = FileImage::open(path, "device state");
    if (!image) return bad_request("{}", image.error().what());
    auto where = [&](Error e) { return std::unexpected(context(std::move(e), fmt::format("device state '{}'", path))); };
    auto file = migration::StateFile::parse(image->bytes());
    if (!file) return where(file.error());
    if (auto r = d_->apply_state(*file, {}); !r) return where(r.error());
    log::info("device state loaded from '{}' ({} sections, written by kestrel {} on {})", path,
              file->sections.size(), file->kestrel_version, file->cpu_summary);
    return {};
}

namespace {

constexpr const char* kConfigSection = "config";
constexpr uint32_t kSnapshotSectionVersion = 1;
using migration::kMemoryDiffSection;
using migration::kMemorySection;

std::vector<migration::MemoryRegion> layout_of(const GuestMemory& mem) {
    std::vector<migration::MemoryRegion> out;
    for (const auto& r : mem.regions()) out.push_back({r.start().raw, r.size()});
    return out;
}
constexpr size_t kMaxConfigJson = 1 << 20;

// Guest RAM into a new file at `path` (written beside it, then renamed over it), regions one
// after another. Pages that read as zero are skipped (a hole): the file is sparse, and a
// restored guest reads zeros there.
//
// With `dirty` (a Diff snapshot: one bitmap per region, bit = 4 KiB page) only those pages are
// written, zero or not, and everything else is a hole: copying the file's data extents onto
// its base (`kestrel snapshot-merge`) gives the Full snapshot of the same moment.
Result<void> write_memory_file(const std::string& path, const GuestMemory& mem,
                               const std::vector<std::vector<uint64_t>>* dirty = nullptr) {
    auto file = TRY(ReplacingFile::create(path));
    constexpr size_t kPage = 4096;
    static const std::array<uint8_t, kPage> zero{};
    uint64_t offset = 0;
    for (size_t ri = 0; ri < mem.regions().size(); ++ri) {
        const auto& r = mem.regions()[ri];
        const uint8_t* base = r.host_base();
        auto wanted = [&](uint64_t p) {
            if (!dirty) return std::memcmp(base + p, zero.data(), kPage) != 0;
            const uint64_t page = p / kPage;
            return ((*dirty)[ri][page / 64] >> (page % 64) & 1) != 0;
        };
        for (uint64_t p = 0; p < r.size();) {
            if (!wanted(p)) {
                p += kPage;
                continue;
            }
            uint64_t q = p + kPage;  // a run of pages in one write
            while (q < r.size() && q - p < (64u << 20) && wanted(q)) q += kPage;
            for (uint64_t done = p; done < q;) {
                ssize_t n = ::pwrite(file.fd(), base + done, q - done, static_cast<off_t>(offset + done));
                if (n < 0 && errno == EINTR) continue;
                if (n <= 0) return fail_errno("writing '{}'", file.tmp_path());
                done += static_cast<uint64_t>(n);
            }
            p = q;
        }
        offset += r.size();
    }
    if (::ftruncate(file.fd(), static_cast<off_t>(offset)) != 0) return fail_errno("sizing '{}'", file.tmp_path());
    return file.commit();
}

}  // namespace

Result<std::vector<std::vector<uint64_t>>> Vmm::Impl::take_dirty() const {
    std::vector<std::vector<uint64_t>> out;
    for (uint32_t slot = 0; slot < mem->regions().size(); ++slot) {
        const auto& r = mem->regions()[slot];
        std::vector<uint64_t> bits = r.dirty().take();
        std::vector<uint64_t> guest(bits.size());
        TRY(vm->get_dirty_log(slot, guest));
        for (size_t i = 0; i < bits.size(); ++i) bits[i] |= guest[i];
        out.push_back(std::move(bits));
    }
    return out;
}

Result<void> Vmm::snapshot(const std::string& state_path, const std::string& mem_path,
                           const std::string& config_json, bool diff) const {
    if (d_->state != State::Paused)
        return not_allowed("snapshot: the VM is {}; a snapshot is only taken while paused", state_name(d_->state));
    const VmConfig& c = d_->cfg;
    if (diff && !c.track_dirty_pages)
        return not_allowed("snapshot: a Diff snapshot needs dirty page tracking (machine-config track_dirty_pages: "
                           "true before the start, or enable_diff_snapshots at snapshot load)");
    migration::StateWriter w(KESTREL_VERSION, host_cpu_summary());
    w.section(kConfigSection, kSnapshotSectionVersion).put_string(config_json);
    migration::encode_memory(w.section(kMemorySection, migration::kMemoryStateVersion), layout_of(*d_->mem));
    TRY(d_->write_state(w));
    // What changed since the last snapshot (or the start): a Diff writes it, a Full resets it.
    std::optional<std::vector<std::vector<uint64_t>>> dirty;
    if (c.track_dirty_pages) {
        dirty = TRY(d_->take_dirty());
        d_->carry_for_diff(*dirty);  // what a migration took meanwhile counts too
        dirty = std::exchange(d_->diff_carry, {});
    }
    // A snapshot that is not written leaves those pages counted as changed for the next one.
    auto failed = [&](Error e) {
        if (dirty)
            for (size_t ri = 0; ri < dirty->size(); ++ri) d_->mem->regions()[ri].dirty().merge((*dirty)[ri]);
        return std::unexpected(std::move(e));
    };
    if (diff) migration::encode_memory_diff(w.section(kMemoryDiffSection, migration::kMemoryStateVersion), *dirty);
    auto bytes = std::move(w).finish();
    if (!bytes) return failed(bytes.error());
    // RAM first: a state file on disk means its memory file is complete.
    if (auto r = write_memory_file(mem_path, *d_->mem, diff ? &*dirty : nullptr); !r)
        return failed(context(r.error(), "snapshot: guest memory"));
    if (auto r = write_file_replacing(state_path, *bytes); !r) {
        ::unlink(mem_path.c_str());  // no state file: the memory file alone is no snapshot
        return failed(context(r.error(), "snapshot"));
    }
    uint64_t pages = 0;
    if (diff)
        for (const auto& bits : *dirty)
            for (uint64_t word : bits) pages += static_cast<uint64_t>(__builtin_popcountll(word));
    log::info("snapshot ({}): state in '{}' ({} bytes), guest memory in '{}' ({})", diff ? "Diff" : "Full",
              state_path, bytes->size(), mem_path,
              diff ? fmt::format("{} changed pages", pages) : fmt::format("{} MiB", d_->mem->total_size() >> 20));
    return {};
}

Result<std::string> Vmm::snapshot_config(const migration::StateFile& file) {
    const migration::Section* s = file.find(kConfigSection);
    if (!s) return bad_request("snapshot: the state file has no '{}' section (a device state file, not a snapshot?)",
                               kConfigSection);
    auto d = TRY(migration::Decoder::of(*s, kSnapshotSectionVersion));
    auto json = TRY(d.string("json", kMaxConfigJson));
    TRY(d.finish());
    return json;
}

Result<std::unique_ptr<Vmm>> Vmm::restore(const VmConfig& cfg, const migration::StateFile& file,
                                          const std::string& mem_path) {
    // The memory layout must be the one this configuration builds.
    const migration::Section* ms = file.find(kMemorySection);
    if (!ms) return bad_request("snapshot: the state file has no '{}' section", kMemorySection);
    if (file.find(kMemoryDiffSection))
        return bad_request("snapshot: this is a Diff snapshot: its memory file holds only the pages changed since the "
                           "snapshot before it; merge it onto that one's memory file first (kestrel snapshot-merge)");
    const auto saved = TRY(migration::decode_memory(*ms));
    std::vector<migration::MemoryRegion> want;
    for (const auto& r : ram_layout(cfg.memory_bytes)) want.push_back({r.start.raw, r.size});
    if (saved != want)
        return bad_request("state: section 'memory': {} region(s), {} bytes: not the layout of the configuration's "
                           "{} MiB of RAM", saved.size(), migration::total_size(saved), cfg.memory_bytes >> 20);

    UniqueFd mem_fd(::open(mem_path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!mem_fd) {
        auto e = fail_errno("snapshot: cannot open the memory file '{}'", mem_path);
        return bad_request("{}", e.error().what());
    }
    // Checked here as a bad snapshot, before anything is built (GuestMemory checks it again).
    struct stat st {};
    if (::fstat(mem_fd.get(), &st) != 0) return fail_errno("snapshot: the memory file '{}'", mem_path);
    if (!S_ISREG(st.st_mode) || static_cast<uint64_t>(st.st_size) != migration::total_size(saved))
        return bad_request("snapshot '{}': the memory file has {} bytes, the guest's RAM {}", mem_path, st.st_size,
                           migration::total_size(saved));
    auto d = std::make_unique<Impl>();
    d->cfg = cfg;
    TRY(d->open_host(/*boot_files=*/false, /*incoming=*/false));
    TRY(d->build(mem_fd.get(), true));
    TRY(d->apply_state(file, {kConfigSection, kMemorySection}));  // a Diff was refused above
    log::info("snapshot restored: {} vCPU(s), {} MiB of guest memory mapped from '{}' (written by kestrel {} on {})",
              cfg.cpus, cfg.memory_bytes >> 20, mem_path, file.kestrel_version, file.cpu_summary);
    return std::unique_ptr<Vmm>(new Vmm(std::move(d)));
}

std::vector<Vmm::RamRegion> Vmm::ram_regions() const {
    std::vector<RamRegion> out;
    for (const auto& r : d_->mem->regions()) out.push_back({r.start().raw, r.size(), r.host_base()});
    return out;
}

void Vmm::set_cpu_throttle(unsigned pct) {
    pct = std::min(pct, kMaxThrottlePct);
    const auto slice = std::chrono::duration_cast<std::chrono::microseconds>(VcpuThread::kThrottleSlice);
    for (auto& t : d_->threads) t->set_throttle_sleep(pct ? slice * pct / (100 - pct) : std::chrono::microseconds(0));
    std::lock_guard lk(d_->throttle_mu);
    if (pct == 0) {
        d_->throttler = {};  // requests stop and joins
        return;
    }
    if (d_->throttler.joinable()) return;
    d_->throttler = std::jthread([this](std::stop_token st) {
        std::mutex mu;
        std::condition_variable_any cv;
        std::unique_lock wait_lk(mu);
        for (;;) {
            cv.wait_for(wait_lk, st, VcpuThread::kThrottleSlice, [] { return false; });  // a stop ends it early
            if (st.stop_requested()) return;
            for (auto& t : d_->threads) t->kick();
        }
    });
}

Result<void> Vmm::set_dirty_tracking(bool on) {
    // KVM_SET_USER_MEMORY_REGION on an existing slot with only its flags changed (api.rst
    // 4.35: a slot's flags may change while the VM runs).
    const bool want = on || d_->cfg.track_dirty_pages;
    for (uint32_t slot = 0; slot < d_->mem->regions().size(); ++slot) {
        const auto& r = d_->mem->regions()[slot];
        TRY(d_->vm->set_user_memory_region(slot, r.start().raw, r.size(), r.host_base(),
                                           want ? KVM_MEM_LOG_DIRTY_PAGES : 0));
        r.dirty().enable(want);
    }
    if (want) d_->carry_for_diff(TRY(d_->take_dirty()));  // counted from now on (a Diff keeps it)
    return {};
}

Result<std::vector<std::vector<uint64_t>>> Vmm::take_dirty_pages() {
    auto bits = TRY(d_->take_dirty());
    d_->carry_for_diff(bits);
    return bits;
}

Result<std::vector<uint8_t>> Vmm::migration_state() const {
    if (d_->state != State::Paused) return not_allowed("migration: the VM's state is only taken while paused");
    migration::StateWriter w(KESTREL_VERSION, host_cpu_summary());
    migration::encode_memory(w.section(kMemorySection, migration::kMemoryStateVersion), layout_of(*d_->mem));
    TRY(d_->write_state(w));
    return std::move(w).finish();
}

Result<std::unique_ptr<Vmm>> Vmm::build_incoming(const VmConfig& cfg) {
    auto d = std::make_unique<Impl>();
    d->cfg = cfg;
    TRY(d->open_host(/*boot_files=*/false, /*incoming=*/true));
    TRY(d->build(-1, /*from_state=*/true));
    return std::unique_ptr<Vmm>(new Vmm(std::move(d)));
}

namespace {
// `step` on every disk, or (one refuses) `back` on those it was done to.
Result<void> on_every_disk(const std::vector<std::shared_ptr<VirtioBlk>>& blks, Result<void> (VirtioBlk::*step)(),
                           Result<void> (VirtioBlk::*back)()) {
    for (size_t i = 0; i < blks.size(); ++i) {
        if (auto r = (*blks[i].*step)(); !r) {
            for (size_t j = 0; j < i; ++j) (void)(*blks[j].*back)();
            return r;
        }
    }
    return {};
}
}  // namespace

Result<void> Vmm::release_backends() {
    TRY(on_every_disk(d_->blks, &VirtioBlk::sync_and_unlock_image, &VirtioBlk::lock_image));
    for (size_t i = 0; i < d_->nets.size(); ++i) {
        if (d_->cfg.nets[i].fd >= 0) continue;
        if (auto r = d_->nets[i]->detach_tap(); !r) {
            (void)acquire_backends();
            return r;
        }
    }
    return {};
}

Result<void> Vmm::acquire_backends() {
    Result<void> first;
    auto keep = [&](Result<void> r) {
        if (!r && first) first = std::move(r);
    };
    for (size_t i = 0; i < d_->nets.size(); ++i) {
        if (d_->nets[i]->tap_attached()) continue;
        auto tap = Tap::open_by_name(d_->cfg.nets[i].tap);
        if (!tap) keep(std::unexpected(context(tap.error(), fmt::format("--net tap={}", d_->cfg.nets[i].tap))));
        else keep(d_->nets[i]->attach_tap(std::move(*tap)));
    }
    keep(on_every_disk(d_->blks, &VirtioBlk::lock_image, &VirtioBlk::sync_and_unlock_image));
    return first;
}

void Vmm::announce_network() {
    for (const auto& n : d_->nets)
        if (auto r = n->announce(); !r) log::warn("{}", r.error().what());
}

Result<void> Vmm::load_migration_state(std::span<const uint8_t> bytes) {
    if (d_->state != State::Built) return not_allowed("migration: the state goes into a VM that has not started");
    auto file = TRY(migration::StateFile::parse(bytes));
    const migration::Section* ms = file.find(kMemorySection);
    if (!ms) return bad_request("state: no section '{}'", kMemorySection);
    if (TRY(migration::decode_memory(*ms)) != layout_of(*d_->mem))
        return bad_request("state: section 'memory': not this VM's memory layout");
    return d_->apply_state(file, {kMemorySection}, /*clock_realtime=*/true);
}

Result<void> Vmm::update_drive_rate_limiter(std::string_view drive_id, const RateLimiterConfig& change) {
    if (d_->state == State::Stopped) return not_allowed("the VM has stopped");
    for (size_t i = 0; i < d_->cfg.disks.size(); ++i) {
        DiskConfig& disk = d_->cfg.disks[i];
        if (disk.id != drive_id) continue;
        d_->blks[i]->rate_limiter().update(rate_limits(change));
        disk.rate_limiter = patched(disk.rate_limiter, change);
        log::info("drive {}: rate limiter updated", disk.id);
        return {};
    }
    return bad_request("drive '{}' does not exist", drive_id);
}

Result<void> Vmm::update_net_rate_limiters(std::string_view iface_id, const std::optional<RateLimiterConfig>& rx,
                                           const std::optional<RateLimiterConfig>& tx) {
    if (d_->state == State::Stopped) return not_allowed("the VM has stopped");
    for (size_t i = 0; i < d_->cfg.nets.size(); ++i) {
        NetConfig& net = d_->cfg.nets[i];
        if (net.id != iface_id) continue;
        if (rx) {
            d_->nets[i]->rx_rate_limiter().update(rate_limits(rx));
            net.rx_rate_limiter = patched(net.rx_rate_limiter, *rx);
        }
        if (tx) {
            d_->nets[i]->tx_rate_limiter().update(rate_limits(tx));
            net.tx_rate_limiter = patched(net.tx_rate_limiter, *tx);
        }
        log::info("network interface {}: rate limiters updated", net.id);
        return {};
    }
    return bad_request("network interface '{}' does not exist", iface_id);
}

namespace {

// The --disk rule: one image (a path, a symlink or hard link to it, another node of the same
// block device) backs at most one drive.
bool same_image(const std::string& a, const std::string& b) {
    struct stat sa, sb;
    if (::stat(a.c_str(), &sa) < 0 || ::stat(b.c_str(), &sb) < 0) return false;
    if (S_ISBLK(sa.st_mode) && S_ISBLK(sb.st_mode)) return sa.st_rdev == sb.st_rdev;
    return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

}  // namespace

Result<void> Vmm::replace_drive_image(const std::string& id, const std::string& path) {
    if (d_->state != State::Running)
        return not_allowed("drive {}: the VM is {}; its image can only be changed while it runs", id,
                           state_name(d_->state));
    auto drive = TRY(d_->drive(id));
    for (const auto& other : d_->cfg.disks)
        if (other.id != id && same_image(path, other.path))
            return bad_request("drive {}: '{}' is the image of drive '{}': an image backs one drive", id, path,
                               other.id);
    if (same_image(path, drive.blk->path())) {
        auto r = drive.blk->refresh_capacity();
        if (!r) return std::unexpected(context(r.error(), fmt::format("drive {}", id)));
    } else {
        auto file = BlockFile::open(path, drive.cfg->read_only, drive.cfg->direct);
        if (!file) return std::unexpected(context(file.error(), fmt::format("drive {}", id)));
        auto r = drive.blk->replace_file(std::move(*file));
        if (!r) return std::unexpected(context(r.error(), fmt::format("drive {}", id)));
    }
    drive.cfg->path = path;
    drive.pci->config_changed();  // §4.1.4.3: config_generation + the config-change interrupt
    log::info("drive {}: now '{}', {} sectors", id, path, drive.blk->capacity_sectors());
    return {};
}

Result<void> Vmm::send_ctrl_alt_del() {
    if (d_->state != State::Running)
        return not_allowed("SendCtrlAltDel: the VM is {}; keys reach only a running guest", state_name(d_->state));
    TRY(d_->i8042->send_ctrl_alt_del());
    log::info("SendCtrlAltDel: Ctrl-Alt-Del typed on the i8042 keyboard");
    return {};
}

VmmMetricSources Vmm::metric_sources() const {
    VmmMetricSources s;
    for (const auto& t : d_->threads) s.vcpus.push_back(&t->counters());
    s.serial = d_->serial.get();
    if (!d_->virtio) return s;
    // The order add_virtio_devices added them in: disks, nets, vsock, rng, balloon.
    const auto& devs = d_->virtio->devices();
    size_t i = 0;
    auto next = [&](const char* kind, std::string id) {
        if (i < devs.size()) s.devices.push_back({kind, std::move(id), &devs[i++]->device()});
    };
    for (const auto& disk : d_->cfg.disks) next("blk", disk.id);
    for (const auto& net : d_->cfg.nets) next("net", net.id);
    if (d_->cfg.vsock) next("vsock", "");
    if (d_->cfg.rng) next("rng", "");
    if (d_->cfg.balloon) next("balloon", "");
    return s;
}

std::vector<VcpuPhase> Vmm::vcpu_phases() const {
    std::vector<VcpuPhase> v;
    for (const auto& t : d_->threads) v.push_back(t->phase());
    return v;
}

const char* state_name(Vmm::State s) {
    switch (s) {
    case Vmm::State::Built: return "not started";
    case Vmm::State::Running: return "running";
    case Vmm::State::Paused: return "paused";
    case Vmm::State::Stopped: return "stopped";
    }
    return "?";
}

}  // namespace kestrel
