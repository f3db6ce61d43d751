// The agent's wire decoding: frame lengths and JSON requests -> typed request structs
// (PROTOCOL.md). Pure: no syscalls, no global state, so tests/fuzz/fuzz_agent_request.cpp can
// feed it arbitrary bytes. Everything a request carries is checked here (types, lengths, id
// syntax, NUL-free strings that later reach syscalls); the executor trusts what comes out.
#pragma once

#include <array>
#include <cstdint>
#include <expected>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace kestrel::agent {

// A frame is a u32 big-endian length then that many bytes of JSON. 1 MiB bounds what one
// request can make the agent buffer; an OCI spec is a few KiB.
inline constexpr uint32_t kMaxFrame = 1u << 20;
inline constexpr uint32_t kProtocolVersion = 1;

// A request that cannot be honoured: the message names the field. `id` is the request's id
// when it could be read (the answer carries it).
struct DecodeError {
    std::string message;
    std::optional<uint64_t> id;
};

template <class T>
using Decoded = std::expected<T, DecodeError>;

// The length in a frame header, refused when 0 or above kMaxFrame.
Decoded<uint32_t> frame_length(std::span<const uint8_t, 4> header);

// Container and exec ids: [A-Za-z0-9_.-]{1,128}, and not "." or ".." (they name directories).
bool valid_id(std::string_view id);

struct Stdio {
    bool in = false;
    bool out = false;
    bool err = false;
    bool terminal = false;  // one pty: "stdout" reads its master, "stdin" writes it
};

struct Rlimit {
    int resource = 0;  // RLIMIT_*
    uint64_t soft = 0;
    uint64_t hard = 0;
};

// OCI runtime spec "process" (config.md#process), the parts the agent applies.
struct Process {
    std::vector<std::string> args;
    std::vector<std::string> env;
    std::string cwd = "/";
    uint32_t uid = 0;
    uint32_t gid = 0;
    std::vector<uint32_t> additional_gids;
    std::optional<uint32_t> umask;
    std::vector<Rlimit> rlimits;
    bool no_new_privileges = false;
};

// One file of a "kestrel-copy" mount: `path` relative to the mount ("" when the mount is a
// single file), contents decoded from base64.
struct CopiedFile {
    std::string path;
    std::string contents;
    uint32_t mode = 0644;
};

struct Mount {
    std::string destination;
    std::string type;  // proc sysfs tmpfs devpts mqueue cgroup cgroup2 bind
    std::string source;
    unsigned long flags = 0;         // MS_*
    unsigned long propagation = 0;   // MS_PRIVATE / MS_SLAVE / MS_SHARED (| MS_REC)
    bool bind = false;
    bool recursive = false;          // rbind
    std::string data;                // the options that are not flags, comma-joined
    // Type "kestrel-copy" (PROTOCOL.md): a host file or directory the shim sent by value.
    // `create` writes it under <state-dir>/<C>/copies/<n>, sets `source` there and binds it
    // like any guest path (type "bind").
    bool copy = false;
    std::vector<CopiedFile> files;
    // Type "kestrel-drive" (PROTOCOL.md): `source` is a guest block device the shim has just
    // swapped a host block volume into; `create` waits until it shows this many bytes (see
    // Rootfs::size), then binds it like any guest path (type "bind"). 0 for other mounts.
    uint64_t drive_size = 0;
    // Type "kestrel-pod-volume" (PROTOCOL.md): a directory of the pod's, shared by its
    // containers and kept until the VM ends (emptyDir, /dev/shm). `create` makes
    // <state-dir>/+pod/<name> with `pod_volume_mode` the first time, sets `source` there and
    // binds it (type "bind"). Empty for other mounts.
    std::string pod_volume;
    uint32_t pod_volume_mode = 0777;
};

// spec.linux.resources, converted to the cgroup v2 files they are written to.
struct Resources {
    std::optional<int64_t> memory_max;   // memory.limit (bytes; -1 = max)
    std::optional<std::string> cpu_max;  // "quota period" or "max period"
    std::optional<int64_t> pids_max;     // pids.limit (-1 or 0 = max)
};

struct Spec {
    Process process;
    std::string hostname;
    bool root_readonly = false;
    std::vector<Mount> mounts;
    Resources resources;
    bool network_namespace = false;  // asked for, ignored: the VM's network is the pod's
    std::vector<std::string> masked_paths;
    std::vector<std::string> readonly_paths;
};

struct Rootfs {
    std::string path;    // a guest directory, bind-mounted; or empty and:
    std::string device;  // a block device
    std::string fstype;  // ext4 | erofs
    bool writable_layer = false;
    // The image's size in bytes when known: a drive swapped in just before `create` reaches
    // the guest's block layer through a config-change interrupt the guest handles
    // asynchronously, so mount waits until the device shows this size (0: don't wait).
    uint64_t size = 0;
};

enum class Stream { Stdin, Stdout, Stderr };

struct Ping {};
struct Create {
    std::string container;
    Spec spec;
    Rootfs rootfs;
    Stdio stdio;
};
struct Exec {
    std::string container;
    std::string exec;
    Process process;
    Stdio stdio;
};
struct Start {
    std::string container, exec;
};
struct Signal {
    std::string container, exec;
    int signal = 0;
    bool all = false;
};
struct State {
    std::string container, exec;
};
struct Resize {
    std::string container, exec;
    uint16_t width = 0, height = 0;
};
struct CloseStdin {
    std::string container, exec;
};
struct Pids {
    std::string container;
};
struct Stats {
    std::string container;
};
struct Delete {
    std::string container;
    std::optional<std::string> exec;
};
struct Shutdown {};

// `network`: what the guest sets on its virtio-net interfaces (cni-shim/net guest_config.hpp
// guest_network_json, PROTOCOL.md). Addresses are kept in binary form, checked here.
inline constexpr size_t kMaxNetInterfaces = 16;
inline constexpr size_t kMaxNetAddresses = 64;   // per interface
inline constexpr size_t kMaxNetRoutes = 256;     // per interface

struct IpPrefix {
    int family = 0;                  // AF_INET or AF_INET6
    std::array<uint8_t, 16> addr{};  // network byte order; AF_INET uses the first 4
    uint8_t prefix_len = 0;          // <= 32 / <= 128
};
struct NetRoute {
    IpPrefix dst;                    // no host bits set
    std::optional<IpPrefix> via;     // the gateway (prefix_len = full length); none: on-link
};
struct NetInterface {
    std::string name;                // the pod's name for it, given to the guest's link (<= 15 bytes)
    std::array<uint8_t, 6> mac{};    // unicast, not all zero; the guest's link is found by it
    uint32_t mtu = 0;                // 68 .. 65535
    std::vector<IpPrefix> addresses;
    std::vector<NetRoute> routes;
};
struct Network {
    std::vector<NetInterface> interfaces;  // 1 .. kMaxNetInterfaces, MACs distinct
};

struct Attach {
    std::string container, exec;
    Stream stream = Stream::Stdout;
};

using Body = std::variant<Ping, Create, Exec, Start, Signal, State, Resize, CloseStdin, Pids, Stats, Delete,
                          Shutdown, Attach, Network>;

struct Request {
    uint64_t id = 0;  // 0 for attach, which has none
    Body body;
};

// One frame's payload (without its length) -> a request. "attach" is decoded too (it has no
// id); the caller decides whether it is allowed where it came.
Decoded<Request> decode_request(std::string_view payload);

}  // namespace kestrel::agent
