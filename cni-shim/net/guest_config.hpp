// The guest's side of a pod network: what the guest must set on the virtio-net interface
// that carries a PodInterface's tap (its MAC, MTU, addresses and routes), in the two forms
// the guest can take it.
#pragma once

#include <string>

#include "cni-shim/net/pod_network.hpp"

namespace kestrel::cninet {

// The Linux kernel's `ip=` boot parameter (Documentation/admin-guide/nfs/nfsroot.rst:
// ip=<client-ip>:<server-ip>:<gw-ip>:<netmask>:<hostname>:<device>:<autoconf>) configuring
// `guest_device` statically with the interface's first IPv4 address and IPv4 default gateway,
// e.g. "ip=10.88.0.5::10.88.0.1:255.255.255.0::eth0:off". It sets one interface, no MTU, no
// other routes, and only kernels built with CONFIG_IP_PNP read it: Debian's cloud kernel
// (6.1.0-*-cloud-amd64, the pod guests' kernel) is not, nor is virtio_net built in there.
// Error when the interface has no IPv4 address.
Result<std::string> kernel_ip_param(const PodInterface& itf, const std::string& guest_device = "eth0");

// Everything for the guest agent, one entry per interface in PodNetwork order; the guest
// finds its interface by MAC (names differ between host and guest):
//   {"interfaces": [{"name": "eth0", "mac": "aa:bb:cc:dd:ee:ff", "mtu": 1500,
//                    "addresses": ["10.88.0.5/24", "fd00::5/64"],
//                    "routes": [{"dst": "0.0.0.0/0", "via": "10.88.0.1"},
//                               {"dst": "10.88.0.0/24"}]}]}
// "via" is absent for on-link routes; default routes are spelt 0.0.0.0/0 and ::/0.
std::string guest_network_json(const PodNetwork& net);

}  // namespace kestrel::cninet
