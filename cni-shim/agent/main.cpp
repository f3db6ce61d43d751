// kestrel-agent: the guest side of kestrel pods. Parses the command line, does PID 1's
// chores with --init, then serves PROTOCOL.md until `shutdown`.
#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <string>
#include <string_view>

#include "cni-shim/agent/agent.hpp"

using namespace kestrel::agent;

namespace {

void usage() {
    std::fputs(
        "usage: kestrel-agent [--listen vsock:PORT|unix:PATH] [--init] [--state-dir DIR] [--cgroup-root DIR]\n"
        "  --listen       where the host connects (default vsock:1024)\n"
        "  --init         be the guest's PID 1: mount /proc /sys /dev /run and cgroup2, power off on shutdown\n"
        "  --state-dir    container rootfs mounts (default /run/kestrel-agent)\n"
        "  --cgroup-root  container cgroups (default /sys/fs/cgroup/kestrel)\n",
        stderr);
}

// The filesystems a guest with only an initramfs lacks. EBUSY: already there.
void init_mounts() {
    struct M {
        const char *src, *dst, *type;
        unsigned long flags;
        const char* data;
    };
    const M mounts[] = {
        {"proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, nullptr},
        {"sysfs", "/sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, nullptr},
        {"devtmpfs", "/dev", "devtmpfs", MS_NOSUID, "mode=0755"},
        {"devpts", "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC, "ptmxmode=0666,mode=0620,gid=5"},
        {"cgroup2", "/sys/fs/cgroup", "cgroup2", MS_NOSUID | MS_NODEV | MS_NOEXEC, nullptr},
        {"tmpfs", "/run", "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755"},
    };
    for (const auto& m : mounts) {
        ::mkdir(m.dst, 0755);
        if (::mount(m.src, m.dst, m.type, m.flags, m.data) < 0 && errno != EBUSY)
            log(std::string("mount ") + m.dst + ": " + std::strerror(errno));
    }
}

}  // namespace

int main(int argc, char** argv) {
    Options o;
    o.listen = "vsock:1024";
    for (int i = 1; i < argc; ++i) {
        const std::string_view a = argv[i];
        auto value = [&]() -> const char* {
            if (i + 1 >= argc) {
                std::fprintf(stderr, "kestrel-agent: %s needs a value\n", argv[i]);
                std::exit(2);
            }
            return argv[++i];
        };
        if (a == "--listen") o.listen = value();
        else if (a == "--init") o.init = true;
        else if (a == "--state-dir") o.state_dir = value();
        else if (a == "--cgroup-root") o.cgroup_root = value();
        else if (a == "--help" || a == "-h") {
            usage();
            return 0;
        } else {
            std::fprintf(stderr, "kestrel-agent: unknown argument %s\n", argv[i]);
            usage();
            return 2;
        }
    }
    if (o.init) init_mounts();
    // Children's stdio fds must not land on 0-2 (spawn.cpp dup2s them there).
    for (int fd = 0; fd < 3; ++fd)
        if (::fcntl(fd, F_GETFD) < 0) ::open(o.init ? "/dev/console" : "/dev/null", O_RDWR);
    auto agent = Agent::create(o);
    if (!agent) {
        log(agent.error());
        return 1;
    }
    // The guest's uptime here dates the agent's start for a pod's start-up breakdown.
    std::string up;
    if (FILE* f = std::fopen("/proc/uptime", "re")) {
        char b[32] = {};
        if (std::fscanf(f, "%31s", b) == 1) up = std::string(" (guest uptime ") + b + " s)";
        std::fclose(f);
    }
    log("listening on " + o.listen + up);
    return (*agent)->run();
}
