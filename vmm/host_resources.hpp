// HostResources: every host resource a VmConfig names — kernel and initrd, the disks'
// images, taps, the vsock socket, the serial sink — opened before KVM and guest RAM exist,
// in the order the user wrote the options (open_order), so the error names the first
// problem written, a host without KVM reports it too, and nothing is built before it.
// run_vm keeps them and wires the devices to the VM afterwards.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <vector>

#include "devices/virtio/blk/virtio_blk.hpp"
#include "devices/virtio/net/virtio_net.hpp"
#include "devices/virtio/vsock/virtio_vsock.hpp"
#include "vmm/file_image.hpp"
#include "vmm/vm_config.hpp"

namespace kestrel {

struct HostResources {
    std::optional<FileImage> kernel;  // mapped, not yet read: dropped once loaded
    std::optional<FileImage> initrd;
    std::vector<std::unique_ptr<VirtioBlk>> disks;  // index = cfg.disks index
    std::vector<std::unique_ptr<VirtioNet>> nets;   // index = cfg.nets index
    std::unique_ptr<VirtioVsock> vsock;
};

// `open_serial` opens the serial sink when its turn comes; the caller keeps it. Also checks
// --memory against the host's RAM + swap at its place in the order. Without `boot_files`
// (a VM restored from a snapshot: its RAM holds the guest) the kernel and initrd are not opened.
// For a live migration's destination (`incoming`) disks are opened unlocked and a tap the
// source still holds (on this host) is only checked to exist: they change hands at the end
// (Vmm::acquire_backends).
Result<HostResources> open_host_resources(const VmConfig& cfg,
                                          const std::function<Result<void>()>& open_serial,
                                          bool boot_files = true, bool incoming = false);

}  // namespace kestrel
