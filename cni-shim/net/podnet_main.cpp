// kestrel-podnet: attach_pod_network/detach_pod_network from the command line, for trying
// pod networking by hand and from test scripts (the shim calls the library directly).
//
//   kestrel-podnet attach NETNS -- CMD [ARG...]
//       attaches, then execs CMD with the taps' fds inherited and in its environment
//       KESTREL_NET_ARGS   "--net fd=N,mac=MAC ..." for `kestrel run`, one per interface
//       KESTREL_GUEST_NET  guest_network_json()
//       KESTREL_IP_PARAM   kernel_ip_param() of the first interface, when it has IPv4
//   kestrel-podnet detach NETNS
#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "cni-shim/net/guest_config.hpp"
#include "cni-shim/net/pod_network.hpp"

using namespace kestrel::cninet;

namespace {

int usage() {
    std::fprintf(stderr, "usage: kestrel-podnet attach NETNS -- CMD [ARG...]\n       kestrel-podnet detach NETNS\n");
    return 2;
}

int attach(const std::string& netns, char** cmd) {
    auto net = attach_pod_network(netns);
    if (!net) {
        std::fprintf(stderr, "kestrel-podnet: %s\n", net.error().c_str());
        return 1;
    }
    std::string args;
    for (auto& itf : net->interfaces) {
        // The fd crosses exec: drop O_CLOEXEC on it (and only on it).
        int fl = ::fcntl(itf.tap_fd.get(), F_GETFD);
        if (fl < 0 || ::fcntl(itf.tap_fd.get(), F_SETFD, fl & ~FD_CLOEXEC) < 0) {
            std::perror("kestrel-podnet: fcntl");
            return 1;
        }
        args += fmt::format("{}--net fd={},mac={}", args.empty() ? "" : " ", itf.tap_fd.get(), itf.mac_string());
    }
    ::setenv("KESTREL_NET_ARGS", args.c_str(), 1);
    ::setenv("KESTREL_GUEST_NET", guest_network_json(*net).c_str(), 1);
    if (auto ip = kernel_ip_param(net->interfaces.front())) ::setenv("KESTREL_IP_PARAM", ip->c_str(), 1);
    ::execvp(cmd[0], cmd);
    std::fprintf(stderr, "kestrel-podnet: exec %s: %s\n", cmd[0], std::strerror(errno));
    if (auto r = detach_pod_network(netns); !r) std::fprintf(stderr, "kestrel-podnet: %s\n", r.error().c_str());
    return 127;
}

}  // namespace

int main(int argc, char** argv) {
    if (argc == 3 && std::string(argv[1]) == "detach") {
        auto r = detach_pod_network(argv[2]);
        if (!r) {
            std::fprintf(stderr, "kestrel-podnet: %s\n", r.error().c_str());
            return 1;
        }
        return 0;
    }
    if (argc >= 5 && std::string(argv[1]) == "attach" && std::string(argv[3]) == "--") return attach(argv[2], argv + 4);
    return usage();
}
