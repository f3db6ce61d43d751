// The agent's `network` request applied to the guest's network namespace over rtnetlink
// (rtnetlink(7); the guest has no `ip` binary and the Debian cloud kernel no CONFIG_IP_PNP):
// `lo` up, then per interface, found by its MAC among the guest's links: MTU and up, its
// addresses, then its routes (on-link ones first, so gateways are reachable when routes
// through them are added). Adds replace what exists, so the request may be repeated.
#pragma once

#include "cni-shim/agent/request.hpp"
#include "cni-shim/agent/sys.hpp"

namespace kestrel::agent {

// Errors name the interface (its index in the request, name and MAC) and the step.
Result<void> apply_network(const Network& n);

}  // namespace kestrel::agent
