// The OCI spec's mounts as the pod VM can have them: a bind mount's source is a path on this
// host, which the guest does not have.
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace kestrel::shim {

// Rewrites config["mounts"] in place for the guest: a bind mount on /dev/shm (the CRI
// plugin binds the sandbox's shm directory there) becomes a tmpfs of the container's own;
// every other bind mount (CRI's /etc/hosts, /etc/hostname, /etc/resolv.conf, volumes) is
// dropped until host files reach the VM. Returns one line per change, for the log. Entries
// that are not objects are left for the agent to refuse.
std::vector<std::string> guest_mounts(nlohmann::json& config);

}  // namespace kestrel::shim
