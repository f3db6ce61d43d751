// One pod's VM: a `kestrel run --api-sock` child configured through the Firecracker-style
// API (README "API"): Debian's cloud kernel, the agent initramfs
// (tools/build-agent-initrd.sh), vsock for the agent, and spare placeholder drives whose
// images are swapped for container rootfs images while the VM runs (README "Changing a
// drive's image while the guest runs").
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "cni-shim/shim/pod_net.hpp"
#include "vmm/base/error.hpp"

namespace kestrel::shim {

struct PodVmConfig {
    std::string kestrel = "kestrel";  // looked up on PATH when not absolute
    std::string kernel = "/usr/share/kestrel/vmlinux";
    std::string initrd = "/usr/share/kestrel/pod-initrd.cpio.gz";
    // cryptomgr.notests: no boot-time self-tests of the kernel's crypto algorithms (the pod
    // VM's kernel used ~0.4 s of its 2 s to init on them, nested host; Kata's guest kernels
    // are built without them).
    std::string cmdline = "console=ttyS0 reboot=k panic=-1 quiet cryptomgr.notests";
    // The VM's size without pod resources; a pod's limits are added (size_pod_vm), up to the
    // max_* caps.
    std::uint32_t vcpus = 1;
    std::uint32_t memory_mib = 256;
    std::uint32_t max_vcpus = 16;
    std::uint32_t max_memory_mib = 16384;
    std::uint32_t spare_drives = 4;  // read-only slots (rootfs images, read-only block volumes): /dev/vda..
    std::uint32_t volume_drives = 2;  // read-write slots for block volumes, the drives after them
    std::uint32_t agent_port = 1024;
    // A virtio-balloon through which the guest reports its free memory (PUT /balloon
    // free_page_reporting): memory the pod's processes used and freed goes back to the host.
    bool free_page_reporting = true;
    std::chrono::seconds boot_timeout{180};
    // Rootfs images of image layers, shared by every pod (rootfs.hpp cached_image); "" = off.
    std::string image_cache_dir = "/var/lib/kestrel-shim/images";
    // A cached image no VMM has open and none has used for this long is removed (checked
    // each time a container takes an image from the cache: rootfs.hpp prune_image_cache).
    std::chrono::seconds image_cache_keep{std::chrono::hours(24 * 7)};
    // Where kestrel.log and console.log go: the pod's state directory when empty (removed
    // with the pod); tests set KESTREL_SHIM_LOG_DIR to keep them.
    std::string log_dir;
};

// Reads the JSON config at `path` (fields as PodVmConfig, all optional); a missing file
// gives the defaults. Unknown fields and bad values are refused by name.
Result<PodVmConfig> load_pod_vm_config(const std::string& path);

// The pod VM's size from the sandbox's OCI spec. containerd's CRI plugin puts the pod's
// resources (the sum of its containers' limits, which the kubelet sends since 1.23) in the
// sandbox spec's annotations io.kubernetes.cri.sandbox-cpu-quota / -cpu-period / -memory
// (bytes). Like Kata, the limits come on top of the configured size, which covers the guest
// kernel and agent: vcpus + ceil(quota / period), memory_mib + ceil(memory / 1 MiB), each
// capped at max_vcpus / max_memory_mib (said in `notes`). No annotations (ctr, a pod
// without limits: quota -1 or 0, memory 0) leave the configured size. An annotation that is
// not a decimal integer is refused by name.
struct PodVmSize {
    std::uint32_t vcpus = 0;
    std::uint32_t memory_mib = 0;
    std::vector<std::string> notes;  // what was capped, for the log
};
Result<PodVmSize> size_pod_vm(const PodVmConfig& cfg, const nlohmann::json& spec);

class PodVm {
public:
    // Starts kestrel with its files in `state_dir` (api.sock, vsock.sock, console.log,
    // kestrel.log, kestrel.pid, drives/) and boots the VM. `on_exit` runs once, on a
    // monitor thread, when kestrel ends for whatever reason. Each of `nets` becomes a
    // virtio-net device on its tap fd, which kestrel inherits (`--net fd=N,mac=MAC,id=ID`).
    static Result<std::unique_ptr<PodVm>> boot(const PodVmConfig& cfg, const std::string& state_dir,
                                               std::function<void(int wait_status)> on_exit,
                                               const std::vector<PodVmNet>& nets = {});
    ~PodVm();  // kill()

    struct Slot {
        int index = -1;
        std::string device;  // guest path, /dev/vdX
    };
    // Swaps a free placeholder for `image`: a read-only slot, or a read-write one when
    // `writable`. Fails when every slot of that kind is taken.
    Result<Slot> attach(const std::string& image, bool writable = false);
    // Puts the placeholder back (the guest must no longer use the device).
    Result<void> detach(int index);

    Result<void> set_paused(bool paused);
    std::string vsock_path() const { return state_dir_ + "/vsock.sock"; }
    std::uint32_t agent_port() const { return cfg_.agent_port; }

    // Waits up to `grace` for kestrel to end by itself (the agent's shutdown powers the
    // guest off), then SIGKILLs it, and reaps it.
    void stop(std::chrono::milliseconds grace);

private:
    PodVm() = default;
    std::string api_sock() const { return state_dir_ + "/api.sock"; }
    PodVmConfig cfg_;
    std::string state_dir_;
    pid_t pid_ = -1;
    std::mutex mu_;
    std::vector<bool> used_;
    std::vector<bool> writable_;  // per slot: configured read-write (the volume drives)
    std::vector<std::string> placeholder_;  // each slot's current placeholder image
    std::uint64_t generation_ = 0;
    std::thread monitor_;
    std::function<void(int)> on_exit_;
};

// For `delete` after a dead shim: SIGKILLs the kestrel recorded in <state_dir>/kestrel.pid
// if that pid still is that kestrel (its command line names <state_dir>/api.sock).
void kill_recorded_kestrel(const std::string& state_dir);

}  // namespace kestrel::shim
