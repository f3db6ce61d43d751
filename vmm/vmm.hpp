// Vmm: one virtual machine and everything it owns — KVM handles, guest RAM, buses, devices,
// the event-loop thread and one thread per vCPU — built from a VmConfig whose host resources
// are already open (host_resources.hpp). Its lifecycle:
//
//   build() -> Built --start()--> Running <--pause()/resume()--> Paused --stop()--> Stopped
//
// Pause means every vCPU is parked out of KVM_RUN (pending PIO/MMIO completed), told about it
// through KVM_KVMCLOCK_CTRL, and every device quiet: host I/O that writes guest memory has
// finished and the event loop is parked, so nothing reaches guest memory until resume()
// (Firecracker's vstate/vcpu pause; Cloud Hypervisor's Pausable for devices).
//
// Only the controller thread calls these. The vCPUs and devices report how the guest ended
// through exits() (VmControl), whose wake fd the controller watches.
#pragma once

#include <chrono>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "vmm/vm_config.hpp"
#include "vmm/vm_exit.hpp"

namespace kestrel {

struct VcpuExitCounters;
enum class VcpuPhase : uint8_t;
class VirtioDevice;
namespace migration {
struct StateFile;
}
class SerialSink;

// What the metrics exporters (vmm/metrics/) walk. Every counter behind it is a relaxed atomic,
// so reading takes no lock and holds up no vCPU or device. Valid while the Vmm lives.
struct VmmMetricSources {
    struct Device {
        const char* kind;  // "blk", "net", "vsock", "rng"
        std::string id;    // drive_id / iface_id from the configuration; empty for vsock and rng
        const VirtioDevice* device;
    };
    std::vector<const VcpuExitCounters*> vcpus;  // index = vCPU
    std::vector<Device> devices;
    const SerialSink* serial = nullptr;
};

class Vmm {
public:
    enum class State { Built, Running, Paused, Stopped };

    // How long pause() waits for a vCPU to leave KVM_RUN and for devices to finish their
    // host I/O before it gives up and leaves the VM running.
    static constexpr std::chrono::milliseconds kPauseLimit{5000};
    // How long stop() waits for the event-loop thread to end (see there).
    static constexpr std::chrono::seconds kLoopJoinLimit{2};

    // Opens every host resource the configuration names (in the order written), then builds
    // KVM state, guest RAM, devices and vCPUs. Nothing runs until start().
    static Result<std::unique_ptr<Vmm>> build(const VmConfig& cfg);
    ~Vmm();  // stops the VM if it still runs

    // With `paused`, the vCPUs never enter the guest before resume() (a restored snapshot
    // that was not asked to resume): the VM goes straight to Paused.
    Result<void> start(bool paused = false);
    Result<void> pause();
    Result<void> resume();
    // Ends the VM (vCPUs leave, the event loop ends, console output is flushed within its
    // bound, device counters are logged) and returns how it ended: the first ending reported
    // through exits(), else `why`. Idempotent.
    GuestExit stop(GuestExit why);

    VmControl& exits();
    State state() const;
    const VmConfig& config() const;
    uint32_t vcpu_count() const;
    // SHA-256 of guest RAM, region by region, for tests that check nothing changed it while
    // paused. Refused unless paused.
    Result<std::string> ram_digest() const;

    // Snapshot hooks, what snapshots and live migration build on: the state of the devices
    // kestrel emulates outside KVM (COM1, CMOS RTC, i8042, ACPI PM and, with the split
    // irqchip, the IOAPIC) as a state stream (migration/state_stream.hpp, sections named in
    // migration/legacy_state.hpp) written to `path` (a new file: written beside it, then
    // renamed over it), and loaded back into this VM: the file is parsed and every section
    // decoded before anything changes, sections this VM has no device for are refused, and
    // a device that refuses its state has the ones before it put back (all or nothing).
    // Only while paused. Holds the vCPUs (registers, LAPIC, MSRs, events), kvm-clock and the
    // virtio PCI functions (config space, MSI-X, transport registers, queue positions:
    // migration/virtio_state.hpp) too; saving settles the virtio queues (VirtioDevice::
    // settle_queues; a vsock device's connections are not kept: the restored guest gets a
    // transport reset). Not in it: guest RAM.
    Result<void> save_device_state(const std::string& path) const;
    Result<void> load_device_state(const std::string& path);

    // A Full snapshot of a paused VM (PUT /snapshot/create): guest RAM into `mem_path`
    // (sparse: zero pages are holes), then the state file at `state_path` (both written beside
    // their names and renamed): sections "config" (`config_json`, the configuration as GET
    // /vm/config gives it), "memory" (the RAM regions) and what save_device_state writes.
    // With --pit, KVM's PIC, IOAPIC and PIT go in it too (section kvm-irqchip). With
    // track_dirty_pages a Full snapshot also starts the next Diff's count afresh.
    // `diff`: only the pages changed since the last snapshot (or the start) go into the
    // memory file, the rest are holes (needs track_dirty_pages; the state file is complete).
    Result<void> snapshot(const std::string& state_path, const std::string& mem_path,
                          const std::string& config_json, bool diff = false) const;
    // The "config" section's JSON of a parsed snapshot state file.
    static Result<std::string> snapshot_config(const migration::StateFile& file);
    // A VM built from a snapshot: `cfg` (from its config section) must give the saved memory
    // layout; guest RAM maps `mem_path` copy-on-write (pages load when touched, the file is
    // never written); then every vCPU and device gets its saved state. Built, not started.
    static Result<std::unique_ptr<Vmm>> restore(const VmConfig& cfg, const migration::StateFile& file,
                                                 const std::string& mem_path);
    // Live migration (vmm/migration_job.hpp drives the source, the controller the
    // destination; migration/migration_stream.hpp is the wire):
    // guest RAM as the source sends it (host mappings, valid while the Vmm lives);
    struct RamRegion {
        uint64_t gpa, size;
        uint8_t* host;
    };
    std::vector<RamRegion> ram_regions() const;
    // KVM's dirty log on every slot (as track_dirty_pages has it from the start) while a
    // migration runs, and back to the configuration after; on, it forgets what was logged;
    Result<void> set_dirty_tracking(bool on);
    // Auto-converge: every vCPU spends `pct` % of its time asleep outside the guest (QEMU's
    // cpu-throttle: each runs kThrottleSlice, then sleeps slice * pct / (100 - pct)), kicked
    // by a throttler thread that runs while pct > 0. Capped at kMaxThrottlePct; 0 ends it.
    static constexpr unsigned kMaxThrottlePct = 95;
    void set_cpu_throttle(unsigned pct);
    // per region, the pages written since the last call (KVM's log OR kestrel's own writes);
    Result<std::vector<std::vector<uint64_t>>> take_dirty_pages();
    // the paused VM's state file: the memory layout and every vCPU and device (save_device_state);
    Result<std::vector<uint8_t>> migration_state() const;
    // the destination: a VM of `cfg` (from the stream) with empty RAM and no boot, which
    // load_migration_state fills with the source's vCPUs and devices (all or nothing) before
    // start(). Its disks are opened unlocked and a tap the source holds is not attached yet
    // (it must exist): acquire_backends() takes them once the source has let go.
    static Result<std::unique_ptr<Vmm>> build_incoming(const VmConfig& cfg);
    Result<void> load_migration_state(std::span<const uint8_t> file);
    // Disks and taps change hands at the end, so the source and destination may share a
    // host: the paused source fsyncs and unlocks every image and detaches every tap it
    // opened by name (VirtioNet::detach_tap; an inherited tap fd stays: it cannot be opened
    // again, and a multi_queue tap takes another user), the destination attaches the taps
    // and locks the images (refused: someone else still has one), a failed migration takes
    // them back at the source. release_backends is all or nothing; acquire_backends tries
    // every one and returns the first error.
    Result<void> release_backends();
    Result<void> acquire_backends();
    // The destination of a migration or a snapshot restore, once the VM is started: every
    // network interface announces the guest's MAC
    // (VirtioNet::announce) so switches learn where it is now.
    void announce_network();

    // The vCPUs' counters, the virtio devices by their configuration ids, the console.
    VmmMetricSources metric_sources() const;
    // Where each vCPU's thread is now (vcpu_loop.hpp VcpuThread::Phase), index = vCPU: its
    // own report, not the VM's state (a vCPU that ended early says so while the VM runs).
    std::vector<VcpuPhase> vcpu_phases() const;

    // PATCH /drives/{id} path_on_host while the guest runs: drive `id` is served from the
    // image at `path` from now on, opened and locked like any --disk (BlockFile: same checks,
    // same messages) in the drive's read-only/direct mode before anything changes; then the
    // device swaps it between requests (VirtioBlk::replace_file) and the guest gets a
    // config-change interrupt with the new capacity. The drive's own image again (resized in
    // place) only re-reads its size. On failure the drive keeps its image. Refused while
    // paused: the swap completes requests to the guest, which a paused VM must not see.
    Result<void> replace_drive_image(const std::string& id, const std::string& path);
    // PUT /actions SendCtrlAltDel: the i8042 keyboard types Ctrl-Alt-Del (devices/legacy/
    // i8042.hpp). Only while running.
    Result<void> send_ctrl_alt_del();
    // PATCH /drives/{id} and /network-interfaces/{id} while the VM runs or is paused: the
    // device's rate limiter and config() change (vmm/rate_limits.hpp says how). An unknown id
    // is a bad request.
    Result<void> update_drive_rate_limiter(std::string_view drive_id, const RateLimiterConfig& change);
    Result<void> update_net_rate_limiters(std::string_view iface_id, const std::optional<RateLimiterConfig>& rx,
                                          const std::optional<RateLimiterConfig>& tx);

    struct Impl;

private:
    explicit Vmm(std::unique_ptr<Impl> d);
    std::unique_ptr<Impl> d_;
};

const char* state_name(Vmm::State s);

}  // namespace kestrel
