// kestrel: a small, fast VMM on /dev/kvm. `kestrel run --kernel … ` boots a guest;
// `kestrel import SRC DST` converts a disk image to raw (vmm/import.hpp).
#include <CLI/CLI.hpp>
#include <spdlog/sinks/stdout_color_sinks.h>

#include <malloc.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <sstream>

#include "vmm/base/log.hpp"
#include "vmm/api/fc_json.hpp"
#include "vmm/controller.hpp"
#include "vmm/seccomp/seccomp.hpp"
#include "vmm/import.hpp"
#include "vmm/snapshot_client.hpp"
#include "vmm/snapshot_merge.hpp"

using namespace kestrel;

namespace {

constexpr const char* kExitCodesHelp = R"(Exit codes:
  0    the guest powered off (ACPI S5)
  1    kestrel could not build or run the VM (bad option, bad image, KVM set-up error)
  2    bad command line
  3    the guest reset itself (i8042 0xFE, ACPI reset register)
  4    the guest triple-faulted
  5    host KVM cannot run the guest (emulation failure, VM-entry failure)
  V    V & 0xff after the guest wrote V to the debug-exit port 0xf4 (only with --debug-exit)
  128+N  stopped by signal N (Ctrl-C gives 130))";

}  // namespace

int main(int argc, char** argv) {
    // One malloc arena for all threads. A thread's first allocation otherwise makes glibc map
    // a 64 MiB-aligned heap and munmap the excess; with a VM attached every munmap runs KVM's
    // MMU notifier, which measured ~4 ms per thread here. kestrel's threads allocate little.
    mallopt(M_ARENA_MAX, 1);
    spdlog::set_default_logger(spdlog::stderr_color_mt("kestrel"));
    spdlog::set_pattern("kestrel: %^%l%$: %v");

    CLI::App app{"kestrel: a small, fast virtual machine monitor on Linux KVM", "kestrel"};
    app.set_version_flag("--version", "kestrel " KESTREL_VERSION);
    app.require_subcommand(1);
    app.footer(kExitCodesHelp);

    VmConfig cfg;
    std::string memory = "256M", serial = "stdio";
    auto* run = app.add_subcommand("run", "Boot a guest kernel directly and run it until it ends");
    auto* kernel_opt = run->add_option("--kernel", cfg.kernel,
                    "Guest kernel: an x86-64 ELF vmlinux (PVH note honoured) or a bzImage "
                    "(required unless --api-sock or --config-file supplies it)");
    auto* initrd_opt = run->add_option("--initrd", cfg.initrd, "Initial ramdisk (cpio archive, may be compressed)");
    run->add_option("--cmdline", cfg.cmdline, "Kernel command line")
        ->default_str(std::string(kDefaultCmdline));
    run->add_option("--cpus", cfg.cpus, "Number of vCPUs")
        ->check(CLI::Range(1u, kMaxVcpus))
        ->default_str("1");
    auto* memory_opt = run->add_option("--memory", memory, "Guest RAM: MiB, or with a K/M/G suffix (e.g. 512M, 2G)")
        ->default_str("256M");
    auto* serial_opt = run->add_option("--serial", serial,
                    "Where the guest's COM1 goes: stdio (input too, when stdin is a terminal), "
                    "file:PATH or none")
        ->default_str("stdio");
    run->add_option("--log-level", cfg.log_level, "Log level on stderr")
        ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error", "off"}))
        ->default_str("warn");
    std::vector<std::string> disks, nets;
    std::string vsock;
    auto* disk_opt = run->add_option("--disk", disks,
                    "virtio-blk disk: PATH[,ro][,direct][,serial=S][,queues=N] (repeatable)");
    auto* net_opt = run->add_option("--net", nets, "virtio-net on an existing tap: tap=NAME or fd=N (an inherited tap fd), [,mac=MAC] (repeatable)");
    auto* vsock_opt = run->add_option("--vsock", vsock, "virtio-vsock: cid=N,socket=PATH (host side: a unix socket)");
    run->add_flag("--rng", cfg.rng, "virtio-rng fed from the host's getrandom()");
    bool free_page_reporting = false;
    run->add_flag("--free-page-reporting", free_page_reporting,
                  "A virtio-balloon (target 0) through which the guest reports its free memory, "
                  "which the host reclaims (PUT /balloon for a target)");
    run->add_flag("--pit", cfg.pit,
                  "Use KVM's in-kernel PIC, IOAPIC and i8254 PIT instead of the split irqchip, for "
                  "guests booted with acpi=off or that need an 8259 or the PIT; Linux with "
                  "kestrel's ACPI tables uses none of them");
    run->add_flag("--debug-exit", cfg.debug_exit,
                  "Map the debug-exit port 0xf4 (QEMU's isa-debug-exit): a guest write of V ends "
                  "kestrel with exit code V & 0xff. For test guests; without it the port is "
                  "unclaimed and a guest cannot choose kestrel's exit status");
    std::string api_sock, config_file, instance_id = "kestrel";
    run->add_option("--api-sock", api_sock,
                    "Serve the Firecracker-compatible API on this unix socket; without --kernel "
                    "(or --config-file) the VM waits to be configured and started through it");
    run->add_option("--config-file", config_file,
                    "Firecracker-format JSON configuration (boot-source, machine-config, drives, "
                    "network-interfaces, vsock, entropy, balloon, logger, metrics); the VM boots at once");
    run->add_option("--id", instance_id, "Instance id reported by GET / (default kestrel)");
    std::string restore_state, restore_mem;
    run->add_option(
        "--restore", restore_state,
        "Instead of booting a kernel, restore the VM of this snapshot state file (PUT /snapshot/create, "
        "`kestrel snapshot`) and run it on; needs --restore-mem. The VM's shape comes from the snapshot; "
        "--serial, --debug-exit, --seccomp, --log-level and --api-sock from here");
    run->add_option("--restore-mem", restore_mem, "The snapshot's memory file (with --restore)");
    std::string incoming;
    std::vector<std::string> remaps;
    run->add_option("--remap", remaps,
                    "With --incoming: FROM=TO, a disk path, tap name or vsock socket path of the source's "
                    "configuration that is TO on this host (repeatable)");
    std::vector<std::string> allow_paths, allow_taps;
    run->add_option("--allow-path", allow_paths,
                    "With --incoming: a directory under which the stream's configuration may name host files "
                    "(disk images, the vsock socket), after --remap and symlinks resolved; repeatable. Without "
                    "it, any path this process may open");
    run->add_option("--allow-tap", allow_taps,
                    "With --incoming: a tap the stream's configuration may name (after --remap); repeatable. "
                    "Without it, any tap");
    run->add_option("--incoming", incoming,
                    "Instead of booting a kernel, wait on unix:PATH or tcp:HOST:PORT for a live migration from "
                    "another kestrel (PUT /migrate, `kestrel migrate`) and run the VM it sends; its configuration "
                    "comes in the stream (its disks and taps must exist here)");
    std::string seccomp_mode = "kill", seccomp_test;
    run->add_option("--seccomp", seccomp_mode,
                    "Per-thread seccomp filters: kill (a forbidden syscall ends kestrel, naming the "
                    "thread and syscall), log (it runs and the kernel audit log records it: dmesg "
                    "| grep type=1326), off")
        ->check(CLI::IsMember({"off", "log", "kill"}))
        ->default_str("kill");
    // Tests only, so hidden from --help: that thread calls a forbidden syscall once its filter
    // is on (vmm/seccomp/seccomp.hpp).
    run->add_option("--seccomp-test", seccomp_test)->group("");
    run->footer(kExitCodesHelp);

    ImportOptions import_opts;
    auto* import_cmd = app.add_subcommand(
        "import", "Convert a VMDK, VHD, VHDX, qcow2 or VDI disk (anything qemu-img reads) to a raw "
                  "image for --disk, through qemu-img (Debian: qemu-utils)");
    import_cmd->add_option("SRC", import_opts.source, "Source disk image")->required();
    import_cmd->add_option("DST", import_opts.destination, "Raw image to write (not replaced unless --force)")
        ->required();
    import_cmd->add_flag("--force", import_opts.force, "Replace DST if it exists (a regular file only)");
    import_cmd->footer("Exit codes: 0 converted, 1 failed (DST untouched), 2 bad command line, "
                       "128+N stopped by signal N (DST untouched)");

    SnapshotClientOptions snap_opts;
    auto* snap_cmd = app.add_subcommand(
        "snapshot", "Snapshot the VM of a running kestrel through its API socket: pause, PUT /snapshot/create, "
                    "resume (restore with `kestrel run --restore STATE --restore-mem MEM`)");
    snap_cmd->add_option("--api-sock", snap_opts.api_socket, "The running kestrel's API socket")->required();
    snap_cmd->add_option("STATE", snap_opts.state_path, "State file to write")->required();
    snap_cmd->add_option("MEM", snap_opts.mem_path, "Memory file to write")->required();
    snap_cmd->add_flag("--diff", snap_opts.diff,
                       "Only the pages changed since the last snapshot (needs track_dirty_pages; merge with "
                       "`kestrel snapshot-merge`)");
    snap_cmd->add_flag("--keep-paused", snap_opts.keep_paused, "Leave the VM paused afterwards");
    snap_cmd->footer("Exit codes: 0 taken, 1 refused or failed (the API's reason on stderr), 2 bad command line");

    std::string merge_diff_state, merge_diff_mem, merge_base_mem, merge_out_state;
    auto* merge_cmd = app.add_subcommand(
        "snapshot-merge", "Merge a Diff snapshot onto the memory file of the snapshot before it: the Diff's pages "
                          "are copied onto BASE_MEM in place, and OUT_STATE + BASE_MEM then load as a Full "
                          "snapshot (PUT /snapshot/load)");
    merge_cmd->add_option("DIFF_STATE", merge_diff_state, "The Diff snapshot's state file")->required();
    merge_cmd->add_option("DIFF_MEM", merge_diff_mem, "The Diff snapshot's memory file")->required();
    merge_cmd->add_option("BASE_MEM", merge_base_mem, "The memory file of the snapshot the Diff was taken after "
                                                      "(written in place)")->required();
    merge_cmd->add_option("OUT_STATE", merge_out_state, "The state file to write for the merged snapshot")
        ->required();
    merge_cmd->footer("Exit codes: 0 merged, 1 failed (named), 2 bad command line");

    MigrateClientOptions mig_opts;
    auto* mig_cmd = app.add_subcommand(
        "migrate", "Live-migrate the VM a running kestrel serves to a kestrel waiting with `run --incoming`: "
                   "PUT /migrate, then GET /migrate's progress until it ends (a line per second; one updated "
                   "line on a terminal)");
    mig_cmd->add_option("--api-sock", mig_opts.api_socket, "The source kestrel's API socket")->required();
    mig_cmd->add_option("--to", mig_opts.destination, "unix:PATH or tcp:HOST:PORT of the destination")->required();
    mig_cmd->add_option("--downtime-ms", mig_opts.downtime_ms, "The stop-and-copy target (default 50)");
    mig_cmd->add_option("--max-bandwidth", mig_opts.max_bandwidth, "Bytes per second, 0 unlimited (default)");
    mig_cmd->add_flag("--auto-converge", mig_opts.auto_converge,
                      "Throttle the vCPUs while the guest dirties memory faster than the link sends it");
    mig_cmd->footer("Exit codes: 0 migrated (the source kestrel ends), 1 refused or failed (the VM keeps running "
                    "in the source), 2 bad command line");

    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        int rc = app.exit(e);
        return rc == 0 ? 0 : kExitUsage;
    }

    if (*snap_cmd) {
        spdlog::set_level(spdlog::level::info);
        return run_snapshot_client(snap_opts);
    }
    if (*mig_cmd) {
        spdlog::set_level(spdlog::level::info);
        return run_migrate_client(mig_opts);
    }
    if (*merge_cmd) {
        spdlog::set_level(spdlog::level::info);
        auto r = merge_snapshot(merge_diff_state, merge_diff_mem, merge_base_mem, merge_out_state);
        if (!r) {
            log::error("snapshot-merge: {}", r.error().what());
            return 1;
        }
        log::info("snapshot-merge: {} pages of '{}' merged onto '{}'; state in '{}'", r->pages, merge_diff_mem,
                  merge_base_mem, merge_out_state);
        return 0;
    }
    if (*import_cmd) {
        import_opts.progress = ::isatty(STDERR_FILENO) == 1;
        return run_import(import_opts);
    }

    spdlog::set_level(spdlog::level::from_str(cfg.log_level));
    auto mem = parse_memory_size(memory);
    if (!mem) {
        log::error("--memory: {}", mem.error().what());
        return kExitUsage;
    }
    cfg.memory_bytes = *mem;
    if (free_page_reporting) cfg.balloon = BalloonConfig{0, false, true};
    auto st = parse_serial(serial);
    if (!st) {
        log::error("--serial: {}", st.error().what());
        return kExitUsage;
    }
    cfg.serial = *st;
    for (const auto& d : disks) {
        auto p = parse_disk(d);
        if (!p) {
            log::error("{}", p.error().what());
            return kExitUsage;
        }
        cfg.disks.push_back(*p);
    }
    for (const auto& n : nets) {
        auto p = parse_net(n);
        if (!p) {
            log::error("{}", p.error().what());
            return kExitUsage;
        }
        cfg.nets.push_back(*p);
    }
    if (!vsock.empty()) {
        auto p = parse_vsock(vsock);
        if (!p) {
            log::error("{}", p.error().what());
            return kExitUsage;
        }
        cfg.vsock = *p;
    }

    // The order the options were written in, one entry per value (CLI11 keeps it), so the
    // first problem on the command line is the one reported (host_resources.hpp).
    size_t disk_n = 0, net_n = 0;
    for (const CLI::Option* o : run->parse_order()) {
        using K = ConfigItem::Kind;
        if (o == kernel_opt) cfg.order.push_back({K::Kernel});
        else if (o == initrd_opt) cfg.order.push_back({K::Initrd});
        else if (o == memory_opt) cfg.order.push_back({K::Memory});
        else if (o == serial_opt) cfg.order.push_back({K::Serial});
        else if (o == disk_opt) cfg.order.push_back({K::Disk, disk_n++});
        else if (o == net_opt) cfg.order.push_back({K::Net, net_n++});
        else if (o == vsock_opt) cfg.order.push_back({K::Vsock});
    }

    if (!config_file.empty()) {
        std::ifstream f(config_file);
        if (!f) {
            log::error("--config-file '{}': {}", config_file, std::strerror(errno));
            return kExitUsage;
        }
        std::stringstream text;
        text << f.rdbuf();
        auto j = api::json::parse(text.str(), nullptr, /*allow_exceptions=*/false);
        if (j.is_discarded()) {
            log::error("--config-file '{}': not valid JSON", config_file);
            return kExitUsage;
        }
        auto applied = api::apply_full_config(cfg, j);
        if (!applied) {
            log::error("--config-file '{}': {}", config_file, applied.error().what());
            return kExitUsage;
        }
        cfg = std::move(*applied);
        spdlog::set_level(spdlog::level::from_str(cfg.log_level));
    }
    // Drives and interfaces from the command line are named as the API would let one name them.
    for (size_t i = 0; i < cfg.disks.size(); ++i)
        if (cfg.disks[i].id.empty()) cfg.disks[i].id = fmt::format("disk{}", i);
    for (size_t i = 0; i < cfg.nets.size(); ++i)
        if (cfg.nets[i].id.empty()) cfg.nets[i].id = fmt::format("net{}", i);

    if (!restore_state.empty() || !restore_mem.empty()) {
        if (restore_state.empty() || restore_mem.empty()) {
            log::error("--restore and --restore-mem go together (the state file and the memory file)");
            return kExitUsage;
        }
        if (!cfg.kernel.empty() || !config_file.empty() || !cfg.disks.empty() || !cfg.nets.empty() || cfg.vsock) {
            log::error("--restore takes the VM from the snapshot: no --kernel, --config-file, --disk, --net or --vsock");
            return kExitUsage;
        }
    }
    if (!incoming.empty() && (!cfg.kernel.empty() || !config_file.empty() || !cfg.disks.empty() ||
                              !cfg.nets.empty() || cfg.vsock || !restore_state.empty())) {
        log::error("--incoming takes the VM from the migration stream: no --kernel, --config-file, --disk, --net, "
                   "--vsock or --restore");
        return kExitUsage;
    }
    if (cfg.kernel.empty() && api_sock.empty() && restore_state.empty() && incoming.empty()) {
        log::error("--kernel is required (or --config-file with a boot-source, or --api-sock to "
                   "configure the VM through the API)");
        return kExitUsage;
    }
    ControllerOptions o;
    o.config = std::move(cfg);
    o.start_now = !o.config.kernel.empty();
    if (!restore_state.empty())
        o.restore = api::SnapshotLoadRequest{.snapshot_path = restore_state, .mem_path = restore_mem,
                                             .resume_vm = true, .enable_diff_snapshots = false};
    o.incoming = incoming;
    for (const auto& m : remaps) {
        auto eq = m.find('=');
        if (eq == std::string::npos || eq == 0 || eq + 1 == m.size() || incoming.empty()) {
            log::error("--remap '{}': FROM=TO, with --incoming", m);
            return kExitUsage;
        }
        o.remap.emplace_back(m.substr(0, eq), m.substr(eq + 1));
    }
    if ((!allow_paths.empty() || !allow_taps.empty()) && incoming.empty()) {
        log::error("--allow-path and --allow-tap go with --incoming");
        return kExitUsage;
    }
    o.allow_paths = allow_paths;
    o.allow_taps = allow_taps;
    o.api_socket = api_sock;
    o.instance_id = instance_id;
    o.seccomp.mode = *seccomp::parse_mode(seccomp_mode);
    if (!seccomp_test.empty()) {
        // Checked here: CLI11 leaves a hidden option's name out of its own message.
        o.seccomp.test_forbidden = seccomp::parse_thread_kind(seccomp_test);
        if (!o.seccomp.test_forbidden) {
            log::error("--seccomp-test: '{}' is not main, api, event-loop, vcpu or serial", seccomp_test);
            return kExitUsage;
        }
    }
    return Controller(std::move(o)).run();
}
