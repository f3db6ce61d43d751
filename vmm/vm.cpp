#include "vmm/vm.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/signalfd.h>

#include <memory>
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
#include "devices/virtio/rng/virtio_rng.hpp"
#include "devices/virtio/vsock/virtio_vsock.hpp"
#include "vmm/arch/x86/cpuid.hpp"
#include "vmm/arch/x86/vcpu_setup.hpp"
#include "vmm/console_input.hpp"
#include "vmm/base/log.hpp"
#include "vmm/event_loop.hpp"
#include "vmm/file_image.hpp"
#include "vmm/host_resources.hpp"
#include "vmm/kvm/kvm.hpp"
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
    auto entry = boot::prepare_boot(
        mem, {host.kernel->bytes(), host.initrd ? host.initrd->bytes() : std::span<const uint8_t>{},
              cfg.cmdline, rsdp});
    host.kernel.reset();
    host.initrd.reset();
    return entry;
}

// The virtio devices the command line asked for, opened by open_host_resources, in a fixed
// order (PCI slot = order).
Result<void> add_virtio_devices(const VmConfig& cfg, HostResources& host, VirtioWiring& virtio) {
    for (size_t i = 0; i < cfg.disks.size(); ++i)
        TRY(virtio.add(std::move(host.disks[i]), fmt::format("virtio-blk '{}'", cfg.disks[i].path)));
    for (size_t i = 0; i < cfg.nets.size(); ++i) {
        const auto& n = cfg.nets[i];
        TRY(virtio.add(std::move(host.nets[i]), n.fd >= 0 ? fmt::format("virtio-net fd={}", n.fd)
                                                          : fmt::format("virtio-net tap={}", n.tap)));
    }
    if (host.vsock)
        TRY(virtio.add(std::move(host.vsock), fmt::format("virtio-vsock cid {}", cfg.vsock->cid)));
    if (cfg.rng) TRY(virtio.add(std::make_shared<VirtioRng>(), "virtio-rng"));
    return virtio.connect();
}

void log_exit_counters(const std::vector<std::unique_ptr<VcpuThread>>& threads) {
    for (size_t i = 0; i < threads.size(); ++i) {
        std::string line;
        const auto& c = threads[i]->counters().by_reason;
        for (size_t r = 0; r < c.size(); ++r)
            if (c[r]) line += fmt::format(" exit{}={}", r, c[r]);
        log::debug("vCPU {} exits:{}", i, line.empty() ? " none" : line);
    }
}

}  // namespace

Result<GuestExit> run_vm(const VmConfig& cfg) {
    // Every file, device and socket first, in the order written (host_resources.hpp): a bad
    // path is the most common mistake, and it is reported before anything is built.
    SerialOutput serial_out;
    auto host = TRY(open_host_resources(cfg, [&]() -> Result<void> {
        serial_out = TRY(open_serial_output(cfg.serial));
        return {};
    }));

    auto sys = TRY(kvm::System::open());
    int max_vcpus = sys.check_extension(KVM_CAP_MAX_VCPUS);
    if (max_vcpus > 0 && cfg.cpus > static_cast<uint32_t>(max_vcpus))
        return fail("--cpus {}: host KVM allows at most {} vCPUs", cfg.cpus, max_vcpus);
    if (kvm::System::host_is_pvm())
        log::warn("host /dev/kvm is kvm-pvm: the guest runs in KVM's instruction emulator "
                  "(slow; a stock Linux kernel cannot boot here)");

    auto mem = TRY(GuestMemory::create(ram_layout(cfg.memory_bytes)));
    // Guest RAM above 2 MiB may use transparent huge pages: KVM then maps it 2 MiB at a time
    // (fewer nested page faults and TLB misses; QEMU does the same). The low 2 MiB, where
    // kestrel writes the boot structures and ACPI tables, keeps small pages so a tiny guest
    // stays small. Refusal (THP disabled) is not an error.
    for (const auto& r : mem.regions()) {
        constexpr uint64_t kHuge = 2ull << 20;
        const uint64_t skip = r.start().raw < kHuge ? kHuge - r.start().raw : 0;
        if (r.size() > skip) (void)::madvise(r.host_base() + skip, r.size() - skip, MADV_HUGEPAGE);
    }
    auto vm = TRY(kvm::Vm::create(sys));
    TRY(vm.set_tss_and_identity_map(kKvmTssAddr, kKvmIdentityMapAddr));
    // Interrupt controllers. By default the split irqchip: local APICs in KVM, the IOAPIC in
    // kestrel (devices/legacy/ioapic.hpp), no 8259. KVM_CREATE_IRQCHIP's PIC+IOAPIC made the
    // first memory slot wait 4-10 ms on the measured host (SRCU work it leaves behind), and
    // Linux under the hardware-reduced ACPI kestrel presents never uses an 8259 or the PIT
    // (acpi_reduced_hw_init: null legacy PIC, no timer_init; kvm-clock and the LAPIC timer).
    // --pit (guests booted with acpi=off, or that poll the PIT) takes the in-kernel PIC,
    // IOAPIC and i8254 PIT, which KVM only offers together.
    const bool kernel_irqchip = cfg.pit;
    if (kernel_irqchip) {
        TRY(vm.create_irqchip());
        TRY(vm.create_pit2());
    } else {
        TRY(vm.create_split_irqchip(kvm::GsiRouting::kIoapicPins));
    }
    for (uint32_t slot = 0; slot < mem.regions().size(); ++slot) {
        const auto& r = mem.regions()[slot];
        TRY(vm.set_user_memory_region(slot, r.start().raw, r.size(), r.host_base()));
    }

    const acpi::PciHostConfig pci_host{.ecam_base = x86::kPciEcamStart,
                                       .bus_start = 0,
                                       .bus_end = static_cast<uint8_t>((x86::kPciEcamSize >> 20) - 1),
                                       .mmio32_base = x86::kPciMmio32Start,
                                       .mmio32_size = x86::kPciMmio32Size};
    auto rsdp = TRY(acpi::write_acpi_tables(mem, acpi::AcpiConfig{cfg.cpus, pci_host, kernel_irqchip}));
    auto entry = load_guest(mem, cfg, host, rsdp);
    if (!entry) return std::unexpected(context(entry.error(), fmt::format("--kernel '{}'", cfg.kernel)));
    log::info("kernel entry {:#x} ({}), {} MiB RAM, {} vCPU(s)", entry->entry.raw,
              entry->mode == boot::EntryMode::Pvh32 ? "PVH 32-bit" : "Linux 64-bit",
              cfg.memory_bytes >> 20, cfg.cpus);

    VmControl ctl;
    auto loop_ptr = TRY(EventLoop::create());
    EventLoop& loop = *loop_ptr;
    Bus pio("port I/O"), mmio("MMIO");
    ConsoleInput console(loop, STDIN_FILENO);
    kvm::GsiRouting routing(vm, kernel_irqchip);
    std::shared_ptr<IoApic> ioapic;
    std::shared_ptr<InterruptLine> com1_irq;
    if (kernel_irqchip) {
        com1_irq = std::make_shared<KvmIrqLine>(vm, x86::kCom1Irq);
    } else {
        ioapic = std::make_shared<IoApic>(std::make_shared<kvm::KvmIoapicSink>(routing, vm));
        TRY(mmio.insert(x86::kIoapicAddr, IoApic::kMmioSize, ioapic));
        com1_irq = ioapic_line(ioapic, x86::kCom1Irq);  // ISA IRQ n is pin n (no MADT override)
    }
    // Before the UART: it transmits into the sink's buffer and never writes to the host itself.
    auto serial = TRY(SerialSink::start(loop, std::move(serial_out)));
    auto uart = std::make_shared<Uart16550>(com1_irq, serial->buffer(),
                                            [&console] { console.on_drained(); });
    console.attach(uart);
    auto reset = [&ctl] { ctl.request({ExitKind::Reset, 0, "guest requested a reset"}); };
    auto poweroff = [&ctl] { ctl.request({ExitKind::PowerOff, 0, "guest powered off"}); };
    uint64_t low_ram = mem.regions()[0].size();
    uint64_t high_ram = mem.regions().size() > 1 ? mem.regions()[1].size() : 0;
    TRY(pio.insert(x86::kCom1Port, 8, uart));
    TRY(pio.insert(x86::kI8042DataPort, 5, std::make_shared<I8042>(reset)));
    TRY(pio.insert(x86::kCmosPort, 2, std::make_shared<CmosRtc>(CmosMemorySizes{low_ram, high_ram})));
    // Only on request: otherwise any guest could choose kestrel's exit status and make a
    // supervisor believe it powered off or reset. Unmapped, 0xf4 is an unclaimed port.
    if (cfg.debug_exit)
        TRY(pio.insert(x86::kDebugExitPort, 4, std::make_shared<DebugExit>([&ctl](uint32_t code) {
                           ctl.request({ExitKind::DebugExit, static_cast<int>(code),
                                        fmt::format("guest wrote {} to the debug-exit port", code)});
                       })));
    TRY(pio.insert(x86::kAcpiSleepControlPort, 3, std::make_shared<AcpiPmDevice>(poweroff, reset)));

    // PCI: config cycles through 0xCF8 and ECAM, BARs in the 32-bit window; virtio devices.
    auto pci = PciRoot::create();
    TRY(pio.insert(x86::kPciConfigPort, PciRoot::kConfigIoLength, pci->config_io()));
    TRY(mmio.insert(x86::kPciEcamStart, x86::kPciEcamSize, pci->ecam()));
    TRY(mmio.insert(pci->window().base, pci->window().size, pci->mmio()));
    VirtioWiring virtio(vm, routing, mem, loop, pci);
    TRY(add_virtio_devices(cfg, host, virtio));

    auto supported = TRY(sys.supported_cpuid());
    std::vector<std::unique_ptr<kvm::Vcpu>> vcpus;
    for (uint32_t i = 0; i < cfg.cpus; ++i) {
        auto v = std::make_unique<kvm::Vcpu>(TRY(kvm::Vcpu::create(sys, vm, i)));
        TRY(v->set_cpuid(x86::build_cpuid(supported, i, cfg.cpus)));
        TRY(x86::setup_common(*v));
        if (i == 0) TRY(x86::setup_boot_vcpu(*v, mem, *entry));
        vcpus.push_back(std::move(v));
    }

    // SIGINT/SIGTERM are taken by the event loop through a signalfd, so no thread dies
    // holding the terminal in raw mode.
    sigset_t stop_signals;
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGINT);
    sigaddset(&stop_signals, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
    UniqueFd sigfd(::signalfd(-1, &stop_signals, SFD_CLOEXEC | SFD_NONBLOCK));
    TRY(loop.add(sigfd.get(), EPOLLIN, [&](uint32_t) {
        signalfd_siginfo si{};
        if (::read(sigfd.get(), &si, sizeof si) == sizeof si)
            ctl.request({ExitKind::Signal, static_cast<int>(si.ssi_signo),
                         fmt::format("stopped by signal {}", si.ssi_signo)});
    }));
    std::optional<RawTerminal> raw_tty;
    if (cfg.serial.kind == SerialTarget::Kind::Stdio && ::isatty(STDIN_FILENO)) {
        raw_tty.emplace(STDIN_FILENO);
        TRY(console.start());
    }

    VcpuThread::install_kick_handler();
    std::vector<std::unique_ptr<VcpuThread>> threads;
    std::function<void(uint8_t)> on_eoi;
    if (ioapic) on_eoi = [&ioapic](uint8_t vector) { ioapic->end_of_interrupt(vector); };
    for (auto& v : vcpus)
        threads.push_back(std::make_unique<VcpuThread>(*v, pio, mmio, ctl, on_eoi));
    for (auto& t : threads) t->start();
    std::thread loop_thread([&] { loop.run(ctl); });

    GuestExit how = ctl.wait();
    for (auto& t : threads) t->kick();
    for (auto& t : threads) t->join();
    loop_thread.join();
    // Bounded (SerialSink::kExitGrace) even when the output is stuck: what cannot be written
    // by then is dropped and counted, so a stalled reader never delays the exit further.
    serial->finish();
    log_exit_counters(threads);
    virtio.log_metrics();
    return how;
}

}  // namespace kestrel
