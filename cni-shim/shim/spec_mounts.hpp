// The OCI spec's mounts as the pod VM can have them: a bind mount's source is a path on this
// host, which the guest does not have.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "vmm/base/error.hpp"

namespace kestrel::shim {

// Bounds on what a container's kestrel-copy mounts carry (the agent's create request is one
// frame of at most 1 MiB, and base64 takes 4 bytes for 3).
inline constexpr std::size_t kCopyBudgetBytes = 512 * 1024;  // all files of one container
inline constexpr std::size_t kCopyMaxFiles = 256;             // per mount (the agent's limit)
inline constexpr int kCopyMaxDepth = 8;                       // directories below a mount

// Rewrites config["mounts"] in place for the guest, whose VM does not have this host's paths:
// - a bind mount on /dev/shm (the CRI plugin binds the sandbox's shm directory there) and
//   every bind of a kubelet emptyDir (.../volumes/kubernetes.io~empty-dir/<name>) become
//   "kestrel-pod-volume" mounts (agent PROTOCOL.md): a directory of the pod's in the guest's
//   RAM, shared by the pod's containers like the node's directory would be ("shm",
//   "empty-dir-<name>"); the node's directory stays unused;
// - the CRI plugin's /etc/hosts, /etc/hostname and /etc/resolv.conf, and every read-only bind
//   of a file or directory (configMap, secret, downward API, projected volumes: the kubelet
//   mounts them read-only) are sent by value: a "kestrel-copy" mount (agent PROTOCOL.md)
//   with the files' contents in base64, the agent writes them in the guest and binds them.
//   A directory's regular files are copied (symlinks followed, as the kubelet's atomic
//   writer makes them; names starting with ".." skipped: its internals), up to
//   kCopyMaxFiles per mount, kCopyMaxDepth levels and kCopyBudgetBytes in all; an empty
//   directory becomes an empty read-only tmpfs;
// - the kubelet's /dev/termination-log (a read-write file on the node) is dropped: the
//   termination message then comes from the container's log (FallbackToLogsOnError);
// - every other bind cannot be given to the pod VM and is `unsupported`, with the reason:
//   a read-write hostPath (a copy would not be shared with the node or the pod's other
//   containers), a socket or device, a copy over its bounds, an unreadable path. The shim
//   refuses such a container rather than run it without what it asked for.
// `changes` has one line per change, for the log (the unsupported ones too). Entries that
// are not objects are left for the agent to refuse.
struct GuestMounts {
    std::vector<std::string> changes;
    std::vector<std::string> unsupported;
};
GuestMounts guest_mounts(nlohmann::json& config);

// A block device the spec passes into the container: an entry of linux.devices
// (runtime-spec config-linux.md#devices), which containerd's CRI plugin makes from the CRI
// `devices` the kubelet fills for a pod's volumeDevices (PVCs with volumeMode: Block).
struct BlockDevice {
    std::string container_path;  // where the container sees it
    std::uint32_t major = 0, minor = 0;
    bool read_only = false;  // linux.resources.devices does not let the container write it
};

// linux.devices as the pod VM can have them: each block device becomes its own virtio-blk
// drive, read-only unless linux.resources.devices lets the container write it. Any other
// device type is refused: a host character device cannot be handed to a VM. Errors name the
// entry.
Result<std::vector<BlockDevice>> block_devices(const nlohmann::json& config);

// The host's node for a block device: /dev/<DEVNAME> from <sysfs>/dev/block/MAJ:MIN/uevent,
// checked to be that block device.
Result<std::string> host_block_device(std::uint32_t major, std::uint32_t minor, const std::string& sysfs = "/sys",
                                      const std::string& dev = "/dev");

// A block device's size in bytes (BLKGETSIZE64); an empty device is refused.
Result<std::uint64_t> block_device_bytes(const std::string& path);

// RFC 4648 §4 base64 with padding.
std::string base64_encode(std::string_view data);

}  // namespace kestrel::shim
