// The pod VM's network: the network namespace the sandbox's OCI spec names (containerd's CRI
// plugin made it and ran the node's CNI plugins in it), the taps cni-shim/net pairs with its
// interfaces by tc mirred, and what the guest agent is told to configure.
//
// kestrel gets each tap as an inherited fd (`kestrel run --net fd=N,mac=MAC,id=ID`), not by
// `PUT /network-interfaces` {host_dev_name}: kestrel would open that name in its own network
// namespace, while the tap lives in the pod's (and a second TUNSETIFF on a tap without
// IFF_MULTI_QUEUE that the shim holds open is refused anyway).
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "cni-shim/net/pod_network.hpp"
#include "vmm/base/error.hpp"

namespace kestrel::shim {

// linux.namespaces[{"type":"network","path":P}] of an OCI spec: P, or nullopt when the spec
// asks for no network namespace or a new one (no path: no NIC, as runc would give only lo).
// A path must be absolute, at most 4095 bytes, without NUL or "." / ".." components.
Result<std::optional<std::string>> spec_netns_path(const nlohmann::json& config);

struct PodVmNet {
    int fd = -1;      // a tap fd, O_CLOEXEC; the VM's fork clears that in the child only
    std::string mac;  // the veth's: the guest's virtio-net MAC
    std::string id;   // kestrel's interface id: net0, net1, ...
};

class PodNet {
public:
    // attach_pod_network(netns); errors name the namespace.
    static Result<std::unique_ptr<PodNet>> attach(const std::string& netns);
    ~PodNet();  // closes the taps' fds and detach_pod_network(): no tap or qdisc of ours is left

    const std::string& netns() const { return net_.netns_path; }
    std::vector<PodVmNet> vm_nets() const;
    // The agent's `network` request (PROTOCOL.md) without its id.
    nlohmann::json agent_request() const;

private:
    explicit PodNet(cninet::PodNetwork n) : net_(std::move(n)) {}
    cninet::PodNetwork net_;
};

// For `delete` after a dead shim: removes our taps, filters and qdiscs from `netns`.
void detach_netns(const std::string& netns);

}  // namespace kestrel::shim
