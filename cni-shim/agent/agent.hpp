// The agent's event loop: one thread, epoll over the listener, the connections, the
// processes' stdio and a signalfd for SIGCHLD. Owns the containers and their processes.
#pragma once

#include <memory>
#include <string>

#include "cni-shim/agent/sys.hpp"

namespace kestrel::agent {

struct Options {
    std::string listen;                          // "vsock:PORT" or "unix:PATH"
    bool init = false;                           // PID 1 of the guest
    std::string state_dir = "/run/kestrel-agent";
    std::string cgroup_root = "/sys/fs/cgroup/kestrel";
};

class Agent {
public:
    static Result<std::unique_ptr<Agent>> create(const Options& o);
    ~Agent();
    // Serves until `shutdown`; returns the process exit code.
    int run();

    struct Impl;

private:
    explicit Agent(std::unique_ptr<Impl> impl);
    std::unique_ptr<Impl> impl_;
};

}  // namespace kestrel::agent
