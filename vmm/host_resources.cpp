#include "vmm/host_resources.hpp"

#include <sys/stat.h>

#include "vmm/base/log.hpp"

namespace kestrel {

namespace {

// Two --disk paths naming one image (the same path, a symlink, a hard link, another node of
// one block device) would each lock it and the second would be refused as "in use": say
// what really happened. Checked before the image is opened and locked.
struct DiskIdentity {
    struct stat st;
    std::string path;
};

Result<void> check_not_given_twice(const std::string& path, std::vector<DiskIdentity>& seen) {
    DiskIdentity me{{}, path};
    if (::stat(path.c_str(), &me.st) < 0) return {};  // BlockFile::open says what is wrong
    for (const auto& other : seen) {
        const bool same = S_ISBLK(me.st.st_mode) && S_ISBLK(other.st.st_mode)
                              ? me.st.st_rdev == other.st.st_rdev
                              : me.st.st_dev == other.st.st_dev && me.st.st_ino == other.st.st_ino;
        if (same)
            return fail("--disk '{}' is the same image as --disk '{}': an image can be given once",
                        path, other.path);
    }
    seen.push_back(std::move(me));
    return {};
}

Result<std::unique_ptr<VirtioBlk>> open_disk(const DiskConfig& d, uint32_t cpus,
                                             std::vector<DiskIdentity>& seen, bool lock) {
    TRY(check_not_given_twice(d.path, seen));
    VirtioBlkOptions o{d.path, d.read_only, d.direct, d.serial,
                       static_cast<uint16_t>(d.queues ? d.queues : cpus), 256, lock};
    auto blk = VirtioBlk::create(o);
    if (!blk) return std::unexpected(context(blk.error(), fmt::format("--disk '{}'", d.path)));
    return std::move(*blk);
}

Result<std::unique_ptr<VirtioNet>> open_net(const NetConfig& n, bool incoming) {
    VirtioNetOptions o;
    o.tap = n.tap;
    o.defer_if_busy = incoming && n.fd < 0;  // an inherited fd is this process's own
    if (n.fd >= 0) o.tap_fd = ::dup(n.fd);  // the device owns what it is given
    if (n.mac) o.mac = *n.mac;
    const std::string what = n.fd >= 0 ? fmt::format("fd={}", n.fd) : fmt::format("tap={}", n.tap);
    if (n.fd >= 0 && o.tap_fd < 0) return fail_errno("--net {}: not an open file descriptor", what);
    auto net = VirtioNet::create(o);
    if (!net) return std::unexpected(context(net.error(), fmt::format("--net {}", what)));
    return std::move(*net);
}

Result<std::unique_ptr<VirtioVsock>> open_vsock(const VsockConfig& v) {
    VirtioVsockOptions o;
    o.guest_cid = v.cid;
    o.uds_path = v.socket;
    auto vsock = VirtioVsock::create(o);
    if (!vsock) return std::unexpected(context(vsock.error(), fmt::format("--vsock socket={}", v.socket)));
    return std::move(*vsock);
}

Result<void> check_memory(uint64_t bytes) {
    auto host = read_host_memory();
    if (!host) {
        log::warn("--memory not checked against the host: {}", host.error().what());
        return {};
    }
    return check_memory_fits(bytes, *host);
}

}  // namespace

Result<HostResources> open_host_resources(const VmConfig& cfg,
                                          const std::function<Result<void>()>& open_serial, bool boot_files,
                                          bool incoming) {
    using K = ConfigItem::Kind;
    HostResources r;
    r.disks.resize(cfg.disks.size());
    r.nets.resize(cfg.nets.size());
    std::vector<DiskIdentity> seen;
    for (const ConfigItem& item : open_order(cfg)) {
        switch (item.kind) {
        case K::Kernel:
            if (boot_files) r.kernel = TRY(FileImage::open(cfg.kernel, "--kernel"));
            break;
        case K::Initrd:
            if (boot_files) r.initrd = TRY(FileImage::open(cfg.initrd, "--initrd"));
            break;
        case K::Memory:
            TRY(check_memory(cfg.memory_bytes));
            // The balloon's target is part of guest RAM: checked with it, before RAM exists.
            if (cfg.balloon && (uint64_t{cfg.balloon->amount_mib} << 20) > cfg.memory_bytes)
                return bad_request("balloon: amount_mib {} is more than the guest's {} MiB of RAM",
                                   cfg.balloon->amount_mib, cfg.memory_bytes >> 20);
            break;
        case K::Serial: TRY(open_serial()); break;
        case K::Disk: r.disks[item.index] = TRY(open_disk(cfg.disks[item.index], cfg.cpus, seen, /*lock=*/!incoming)); break;
        case K::Net: r.nets[item.index] = TRY(open_net(cfg.nets[item.index], incoming)); break;
        case K::Vsock: r.vsock = TRY(open_vsock(*cfg.vsock)); break;
        }
    }
    return r;
}

}  // namespace kestrel
