// VmConfig: everything `kestrel run` was asked for, validated, and the parsers for its
// option values (pure functions, unit-tested).
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "vmm/base/error.hpp"

namespace kestrel {

struct SerialTarget {
    enum class Kind { Stdio, File, None } kind = Kind::Stdio;
    std::string path;
    bool operator==(const SerialTarget&) const = default;
};

inline constexpr std::string_view kDefaultCmdline = "console=ttyS0 reboot=k panic=-1";
inline constexpr uint32_t kMaxVcpus = 254;  // xAPIC IDs; 255 is broadcast (SDM vol. 3A §10.6.2.1)

// Firecracker's token bucket (firecracker.yaml TokenBucket): `size` tokens that refill
// completely over `refill_time_ms`, plus `one_time_burst` extra tokens spent first, once.
struct TokenBucketConfig {
    uint64_t size = 0;
    uint64_t one_time_burst = 0;
    uint64_t refill_time_ms = 0;
    bool operator==(const TokenBucketConfig&) const = default;
};
// Firecracker's RateLimiter: a bandwidth bucket (bytes) and an operations bucket (requests
// or frames); either may be absent (unlimited).
struct RateLimiterConfig {
    std::optional<TokenBucketConfig> bandwidth;
    std::optional<TokenBucketConfig> ops;
    bool operator==(const RateLimiterConfig&) const = default;
};

// --disk PATH[,ro][,direct][,serial=S][,queues=N][,id=ID], or PUT /drives/{drive_id}
struct DiskConfig {
    std::string path;
    bool read_only = false;
    bool direct = false;         // O_DIRECT instead of the host page cache
    std::string serial;          // VIRTIO_BLK_T_GET_ID, at most 20 bytes (virtio 1.2 §5.2.6)
    uint16_t queues = 0;         // 0: one per vCPU
    std::string id;              // Firecracker's drive_id ("diskN" from the command line)
    bool is_root = false;        // root=/dev/vdX (or PARTUUID) joins the kernel command line
    std::string partuuid;        // with is_root: root=PARTUUID=...
    enum class Cache { Unsafe, Writeback } cache = Cache::Writeback;  // Firecracker's cache_type
    std::optional<RateLimiterConfig> rate_limiter;
    bool operator==(const DiskConfig&) const = default;
};
// --net tap=NAME[,mac=52:54:00:12:34:56] or --net fd=N[,mac=…] (a tap fd kestrel inherits,
// already attached with IFF_TAP|IFF_NO_PI|IFF_VNET_HDR, e.g. from a CNI plugin or shim)
struct NetConfig {
    std::string tap;
    int fd = -1;
    std::optional<std::array<uint8_t, 6>> mac;
    std::string id;              // Firecracker's iface_id ("netN" from the command line)
    std::optional<RateLimiterConfig> rx_rate_limiter, tx_rate_limiter;
    bool operator==(const NetConfig&) const = default;
};
// --vsock cid=N,socket=PATH
struct VsockConfig {
    uint32_t cid = 0;
    std::string socket;
    bool operator==(const VsockConfig&) const = default;
};

// One host resource the command line names. Vmm::build opens them all before KVM and guest RAM
// exist, in the order the user wrote them, so the error names the first problem written.
struct ConfigItem {
    enum class Kind { Kernel, Initrd, Memory, Serial, Disk, Net, Vsock } kind;
    size_t index = 0;  // which --disk / --net
    bool operator==(const ConfigItem&) const = default;
};

// PUT /balloon (Firecracker's Balloon object; free_page_reporting as Cloud Hypervisor and
// newer Firecrackers name it): a virtio-balloon device (devices/virtio/balloon).
struct BalloonConfig {
    uint32_t amount_mib = 0;      // the target the guest is asked to give back
    bool deflate_on_oom = false;  // the guest may take it back under memory pressure
    bool free_page_reporting = false;  // the guest reports its free memory, the host reclaims it

    bool operator==(const BalloonConfig&) const = default;
};

struct VmConfig {
    std::string kernel;
    std::string initrd;
    std::string cmdline{kDefaultCmdline};
    uint32_t cpus = 1;
    uint64_t memory_bytes = 256ull << 20;
    SerialTarget serial;
    std::string log_level = "warn";
    std::vector<DiskConfig> disks;
    std::vector<NetConfig> nets;
    std::optional<VsockConfig> vsock;
    bool rng = false;
    bool pit = false;  // in-kernel i8254 (KVM_CREATE_PIT2)
    bool debug_exit = false;  // map the debug-exit port 0xf4 (test guests choose the exit code)
    bool smt = false;                // Firecracker machine-config: accepted, one thread per core
    bool track_dirty_pages = false;  // Firecracker machine-config: for diff snapshots
    // Guest RAM above 2 MiB on transparent huge pages (machine-config huge_pages
    // "Transparent", kestrel's default) or 4 KiB pages only ("None").
    bool huge_pages = true;
    std::optional<RateLimiterConfig> rng_rate_limiter;  // PUT /entropy
    std::optional<BalloonConfig> balloon;               // PUT /balloon
    std::string metrics_path;        // PUT /metrics: Firecracker-style JSON lines
    std::string log_path;            // PUT /logger: where the log goes instead of stderr
    std::vector<ConfigItem> order;  // as written on the command line; see open_order()
};

// cfg.order without repeats, then what it leaves out (defaults, a VmConfig built in code) in
// a fixed order: kernel, initrd, disks, nets, vsock, serial, memory.
std::vector<ConfigItem> open_order(const VmConfig& cfg);

// What the host could give guest RAM at most: /proc/meminfo's MemTotal + SwapTotal.
struct HostMemory {
    uint64_t ram_bytes = 0;
    uint64_t swap_bytes = 0;
};
Result<HostMemory> parse_meminfo(std::string_view text);
Result<HostMemory> read_host_memory();
// Refuses guest RAM larger than the host's RAM + swap, with both numbers in the message.
Result<void> check_memory_fits(uint64_t guest_bytes, const HostMemory& host);

// "512" (MiB), "512M", "65536K", "2G"; at least 16 MiB, at most 1 TiB, whole MiB.
Result<uint64_t> parse_memory_size(std::string_view s);
// "stdio", "none", "file:PATH".
Result<SerialTarget> parse_serial(std::string_view s);
Result<DiskConfig> parse_disk(std::string_view s);
// Drive and interface ids (Firecracker's drive_id / iface_id): 1-64 of [A-Za-z0-9_-].
bool valid_id(std::string_view id);
Result<NetConfig> parse_net(std::string_view s);
Result<VsockConfig> parse_vsock(std::string_view s);

}  // namespace kestrel
