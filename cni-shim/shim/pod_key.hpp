// Which pod a container belongs to and where that pod's shim lives: the grouping rule of
// containerd's runtime v2 (one shim serves every container of a CRI sandbox; the CRI plugin
// marks each container's config.json with the `io.kubernetes.cri.sandbox-id` annotation) and
// the socket/state paths derived from it. Pure functions over the bundle's config.json.
#pragma once

#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "vmm/base/error.hpp"

namespace kestrel::shim {

inline constexpr std::string_view kSandboxIdAnnotation = "io.kubernetes.cri.sandbox-id";
inline constexpr std::string_view kContainerTypeAnnotation = "io.kubernetes.cri.container-type";

// containerd's identifier rule (identifiers/validate.go): alphanumerics separated by single
// '.', '_' or '-', at most 76 bytes. Used for namespaces, container and exec ids alike,
// which keeps them safe as path components and as the agent's ids.
bool valid_identifier(std::string_view id);

// A path from a request that the shim opens or passes on: absolute, no ".." component, no
// NUL, at most `max` bytes.
bool clean_absolute_path(std::string_view p, std::size_t max = 4095);

struct PodMembership {
    std::string group;      // the sandbox id, or the container's own id outside CRI
    bool is_sandbox = true; // the container that boots the pod's VM
};

// From config.json: a container with a sandbox-id annotation other than its own id joins
// that sandbox; everything else (CRI's sandbox container, `ctr run`) is a pod of its own.
Result<PodMembership> pod_membership(const nlohmann::json& config, std::string_view container_id);

// Reads and parses <bundle>/config.json (at most 4 MiB: containerd writes it, but a bundle is
// input like any other).
Result<nlohmann::json> read_bundle_config(const std::string& bundle_dir);

// A short stable key for (containerd address, namespace, group): every shim invocation of the
// same pod computes the same one, so `start` finds a running pod shim by its socket.
std::string pod_key(std::string_view containerd_address, std::string_view ns, std::string_view group);

// sun_path holds 108 bytes with the NUL; both paths below stay far under that, and the pod's
// vsock socket (guest-initiated connections add "_<port>") as well.
std::string shim_socket_path(std::string_view socket_dir, std::string_view key);
std::string pod_state_dir(std::string_view state_root, std::string_view key);

inline constexpr std::string_view kDefaultSocketDir = "/run/containerd/s";
inline constexpr std::string_view kDefaultStateRoot = "/run/kestrel-shim";

}  // namespace kestrel::shim
