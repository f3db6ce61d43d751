// JSON request decoding (see request.hpp). Errors name the field with its JSON path
// ("spec.process.args[2]: expected a string").
#include "cni-shim/agent/request.hpp"

#include <arpa/inet.h>
#include <sys/mount.h>
#include <sys/resource.h>

#include <algorithm>
#include <array>
#include <utility>

#include <nlohmann/json.hpp>

namespace kestrel::agent {
namespace {

using json = nlohmann::json;

// Bounds on what a request may ask for. Each is far above what a real spec holds; they keep
// a hostile frame from making the agent allocate or loop out of proportion.
constexpr size_t kMaxDepth = 64;        // nesting: nlohmann destroys values recursively
constexpr size_t kMaxArgs = 4096;       // args / env entries
constexpr size_t kMaxMounts = 512;
constexpr size_t kMaxGids = 256;        // NGROUPS is 65536, but a pod never needs that
constexpr size_t kMaxPathLen = 4095;    // PATH_MAX - 1
constexpr size_t kMaxHostname = 64;     // HOST_NAME_MAX
constexpr size_t kMaxPaths = 512;       // masked / readonly paths
constexpr size_t kMaxCopiedFiles = 256; // per kestrel-copy mount

std::unexpected<DecodeError> err(std::string msg) { return std::unexpected(DecodeError{std::move(msg), {}}); }

std::string join(std::string_view where, std::string_view field) {
    if (where.empty()) return std::string(field);
    return std::string(where) + "." + std::string(field);
}
std::string index(std::string_view where, size_t i) { return std::string(where) + "[" + std::to_string(i) + "]"; }

// Nesting depth of JSON text, counted outside strings; deeper than kMaxDepth is refused
// before nlohmann builds (and recursively frees) the tree.
bool depth_ok(std::string_view s) {
    size_t depth = 0;
    bool in_string = false, escaped = false;
    for (char c : s) {
        if (in_string) {
            if (escaped) escaped = false;
            else if (c == '\\') escaped = true;
            else if (c == '"') in_string = false;
            continue;
        }
        if (c == '"') in_string = true;
        else if (c == '[' || c == '{') {
            if (++depth > kMaxDepth) return false;
        } else if ((c == ']' || c == '}') && depth > 0) --depth;
    }
    return true;
}

// Accessors: each takes the object, the key and the JSON path of the object.
const json* find(const json& o, std::string_view key) {
    auto it = o.find(key);
    return it == o.end() || it->is_null() ? nullptr : &*it;
}

Decoded<std::string> string_at(const json& v, const std::string& path, size_t max_len, bool allow_empty = true) {
    if (!v.is_string()) return err(path + ": expected a string");
    const auto& s = v.get_ref<const std::string&>();
    if (s.size() > max_len) return err(path + ": longer than " + std::to_string(max_len) + " bytes");
    if (!allow_empty && s.empty()) return err(path + ": must not be empty");
    if (s.find('\0') != std::string::npos) return err(path + ": contains a NUL byte");
    return s;
}

Decoded<std::string> need_string(const json& o, std::string_view key, std::string_view where, size_t max_len,
                                 bool allow_empty = true) {
    const auto path = join(where, key);
    const json* v = find(o, key);
    if (!v) return err(path + ": missing");
    return string_at(*v, path, max_len, allow_empty);
}

Decoded<std::string> opt_string(const json& o, std::string_view key, std::string_view where, size_t max_len) {
    const json* v = find(o, key);
    if (!v) return std::string{};
    return string_at(*v, join(where, key), max_len);
}

Decoded<bool> opt_bool(const json& o, std::string_view key, std::string_view where) {
    const json* v = find(o, key);
    if (!v) return false;
    if (!v->is_boolean()) return err(join(where, key) + ": expected true or false");
    return v->get<bool>();
}

Decoded<uint64_t> u64_at(const json& v, const std::string& path, uint64_t max) {
    if (!v.is_number_unsigned()) return err(path + ": expected an unsigned integer");
    const auto n = v.get<uint64_t>();
    if (n > max) return err(path + ": above " + std::to_string(max));
    return n;
}

Decoded<int64_t> i64_at(const json& v, const std::string& path) {
    if (v.is_number_unsigned()) {
        const auto n = v.get<uint64_t>();
        if (n > static_cast<uint64_t>(INT64_MAX)) return err(path + ": out of range");
        return static_cast<int64_t>(n);
    }
    if (!v.is_number_integer()) return err(path + ": expected an integer");
    return v.get<int64_t>();
}

Decoded<uint64_t> need_u64(const json& o, std::string_view key, std::string_view where, uint64_t max) {
    const json* v = find(o, key);
    if (!v) return err(join(where, key) + ": missing");
    return u64_at(*v, join(where, key), max);
}

Decoded<const json*> need_object(const json& o, std::string_view key, std::string_view where) {
    const json* v = find(o, key);
    if (!v) return err(join(where, key) + ": missing");
    if (!v->is_object()) return err(join(where, key) + ": expected an object");
    return v;
}

Decoded<const json*> opt_object(const json& o, std::string_view key, std::string_view where) {
    const json* v = find(o, key);
    if (!v) return nullptr;
    if (!v->is_object()) return err(join(where, key) + ": expected an object");
    return v;
}

Decoded<const json*> opt_array(const json& o, std::string_view key, std::string_view where, size_t max) {
    const json* v = find(o, key);
    if (!v) return nullptr;
    const auto path = join(where, key);
    if (!v->is_array()) return err(path + ": expected an array");
    if (v->size() > max) return err(path + ": more than " + std::to_string(max) + " entries");
    return v;
}

Decoded<std::string> need_id(const json& o, std::string_view key) {
    const json* v = find(o, key);
    if (!v) return err(std::string(key) + ": missing");
    if (!v->is_string()) return err(std::string(key) + ": expected a string");
    const auto& s = v->get_ref<const std::string&>();
    if (!valid_id(s)) return err(std::string(key) + ": must be 1-128 characters of [A-Za-z0-9_.-], not . or ..");
    return s;
}

// Exec ids may be "" (the container's init process).
Decoded<std::string> exec_id(const json& o, bool required) {
    const json* v = find(o, "exec");
    if (!v) {
        if (required) return err("exec: missing");
        return std::string{};
    }
    if (!v->is_string()) return err("exec: expected a string");
    const auto& s = v->get_ref<const std::string&>();
    if (!s.empty() && !valid_id(s)) return err("exec: must be \"\" or 1-128 characters of [A-Za-z0-9_.-], not . or ..");
    return s;
}

// Each '/'-separated component of `p`: never . or .., at most NAME_MAX bytes, empty only
// when `allow_empty` (an absolute path's leading "/", a doubled or trailing slash).
bool clean_components(std::string_view p, bool allow_empty) {
    size_t start = 0;
    while (start <= p.size()) {
        size_t end = p.find('/', start);
        if (end == std::string_view::npos) end = p.size();
        const auto part = p.substr(start, end - start);
        if (part == "." || part == ".." || part.size() > 255 || (part.empty() && !allow_empty)) return false;
        start = end + 1;
    }
    return true;
}

// An absolute path without "." / ".." components: it is joined under a container's root.
Decoded<std::string> abs_path(const json& v, const std::string& path) {
    auto s = string_at(v, path, kMaxPathLen, false);
    if (!s) return s;
    if ((*s)[0] != '/') return err(path + ": must be an absolute path");
    if (!clean_components(*s, true)) return err(path + ": must not contain . or .. components (or one over 255 bytes)");
    return s;
}

// A guest block device: an absolute path under /dev/.
Decoded<std::string> device_path(const json& v, const std::string& path) {
    auto s = abs_path(v, path);
    if (s && !s->starts_with("/dev/")) return err(path + ": must be under /dev/");
    return s;
}

// A drive's size in bytes: a positive multiple of the 512-byte sector the guest reports
// sizes in, at most 1 PiB.
Decoded<uint64_t> drive_size(const json& v, const std::string& path) {
    auto n = u64_at(v, path, 1ull << 50);
    if (n && (*n == 0 || *n % 512 != 0)) return err(path + ": must be a positive multiple of 512");
    return n;
}

Decoded<std::vector<std::string>> string_list(const json& o, std::string_view key, std::string_view where,
                                              size_t max_entries, bool need_equals) {
    std::vector<std::string> out;
    auto arr = opt_array(o, key, where, max_entries);
    if (!arr) return std::unexpected(arr.error());
    if (!*arr) return out;
    const auto path = join(where, key);
    for (size_t i = 0; i < (*arr)->size(); ++i) {
        auto s = string_at((**arr)[i], index(path, i), kMaxFrame);
        if (!s) return std::unexpected(s.error());
        if (need_equals && s->find('=') == std::string::npos) return err(index(path, i) + ": expected NAME=VALUE");
        out.push_back(std::move(*s));
    }
    return out;
}

struct RlimitName {
    std::string_view name;
    int resource;
};
constexpr std::array<RlimitName, 16> kRlimits{{
    {"RLIMIT_AS", RLIMIT_AS},         {"RLIMIT_CORE", RLIMIT_CORE},       {"RLIMIT_CPU", RLIMIT_CPU},
    {"RLIMIT_DATA", RLIMIT_DATA},     {"RLIMIT_FSIZE", RLIMIT_FSIZE},     {"RLIMIT_LOCKS", RLIMIT_LOCKS},
    {"RLIMIT_MEMLOCK", RLIMIT_MEMLOCK}, {"RLIMIT_MSGQUEUE", RLIMIT_MSGQUEUE}, {"RLIMIT_NICE", RLIMIT_NICE},
    {"RLIMIT_NOFILE", RLIMIT_NOFILE}, {"RLIMIT_NPROC", RLIMIT_NPROC},     {"RLIMIT_RSS", RLIMIT_RSS},
    {"RLIMIT_RTPRIO", RLIMIT_RTPRIO}, {"RLIMIT_RTTIME", RLIMIT_RTTIME},   {"RLIMIT_SIGPENDING", RLIMIT_SIGPENDING},
    {"RLIMIT_STACK", RLIMIT_STACK},
}};

Decoded<Process> decode_process(const json& p, const std::string& where) {
    Process out;
    auto args = string_list(p, "args", where, kMaxArgs, false);
    if (!args) return std::unexpected(args.error());
    if (args->empty()) return err(join(where, "args") + ": missing or empty");
    if ((*args)[0].empty()) return err(index(join(where, "args"), 0) + ": must not be empty");
    out.args = std::move(*args);
    auto env = string_list(p, "env", where, kMaxArgs, true);
    if (!env) return std::unexpected(env.error());
    out.env = std::move(*env);
    if (const json* cwd = find(p, "cwd")) {
        auto c = abs_path(*cwd, join(where, "cwd"));
        if (!c) return std::unexpected(c.error());
        out.cwd = std::move(*c);
    }
    auto user = opt_object(p, "user", where);
    if (!user) return std::unexpected(user.error());
    if (*user) {
        const auto uw = join(where, "user");
        const json& u = **user;
        if (find(u, "username")) return err(join(uw, "username") + ": not supported (give uid and gid)");
        if (const json* v = find(u, "uid")) {
            auto n = u64_at(*v, join(uw, "uid"), UINT32_MAX - 1);
            if (!n) return std::unexpected(n.error());
            out.uid = static_cast<uint32_t>(*n);
        }
        if (const json* v = find(u, "gid")) {
            auto n = u64_at(*v, join(uw, "gid"), UINT32_MAX - 1);
            if (!n) return std::unexpected(n.error());
            out.gid = static_cast<uint32_t>(*n);
        }
        if (const json* v = find(u, "umask")) {
            auto n = u64_at(*v, join(uw, "umask"), 0777);
            if (!n) return std::unexpected(n.error());
            out.umask = static_cast<uint32_t>(*n);
        }
        auto gids = opt_array(u, "additionalGids", uw, kMaxGids);
        if (!gids) return std::unexpected(gids.error());
        if (*gids)
            for (size_t i = 0; i < (*gids)->size(); ++i) {
                auto n = u64_at((**gids)[i], index(join(uw, "additionalGids"), i), UINT32_MAX - 1);
                if (!n) return std::unexpected(n.error());
                out.additional_gids.push_back(static_cast<uint32_t>(*n));
            }
    }
    auto rl = opt_array(p, "rlimits", where, kRlimits.size() * 2);
    if (!rl) return std::unexpected(rl.error());
    if (*rl)
        for (size_t i = 0; i < (*rl)->size(); ++i) {
            const auto path = index(join(where, "rlimits"), i);
            const json& r = (**rl)[i];
            if (!r.is_object()) return err(path + ": expected an object");
            auto type = need_string(r, "type", path, 32);
            if (!type) return std::unexpected(type.error());
            auto it = std::find_if(kRlimits.begin(), kRlimits.end(), [&](auto& n) { return n.name == *type; });
            if (it == kRlimits.end()) return err(join(path, "type") + ": unknown rlimit " + *type);
            auto soft = need_u64(r, "soft", path, UINT64_MAX);
            if (!soft) return std::unexpected(soft.error());
            auto hard = need_u64(r, "hard", path, UINT64_MAX);
            if (!hard) return std::unexpected(hard.error());
            if (*soft > *hard) return err(path + ": soft above hard");
            out.rlimits.push_back({it->resource, *soft, *hard});
        }
    auto nnp = opt_bool(p, "noNewPrivileges", where);
    if (!nnp) return std::unexpected(nnp.error());
    out.no_new_privileges = *nnp;
    return out;
}

// Mount options (OCI config.md#mounts, mount(8)): flags, propagation, and the rest as data.
struct Flag {
    std::string_view name;
    bool clear;
    unsigned long flag;
};
constexpr std::array<Flag, 20> kFlags{{
    {"ro", false, MS_RDONLY},          {"rw", true, MS_RDONLY},         {"nosuid", false, MS_NOSUID},
    {"suid", true, MS_NOSUID},         {"nodev", false, MS_NODEV},      {"dev", true, MS_NODEV},
    {"noexec", false, MS_NOEXEC},      {"exec", true, MS_NOEXEC},       {"sync", false, MS_SYNCHRONOUS},
    {"async", true, MS_SYNCHRONOUS},   {"noatime", false, MS_NOATIME},  {"atime", true, MS_NOATIME},
    {"nodiratime", false, MS_NODIRATIME}, {"diratime", true, MS_NODIRATIME}, {"relatime", false, MS_RELATIME},
    {"norelatime", true, MS_RELATIME}, {"strictatime", false, MS_STRICTATIME}, {"nostrictatime", true, MS_STRICTATIME},
    {"dirsync", false, MS_DIRSYNC},    {"mand", false, MS_MANDLOCK},
}};
constexpr std::array<std::pair<std::string_view, unsigned long>, 6> kPropagation{{
    {"private", MS_PRIVATE}, {"rprivate", MS_PRIVATE | MS_REC}, {"slave", MS_SLAVE},
    {"rslave", MS_SLAVE | MS_REC}, {"shared", MS_SHARED}, {"rshared", MS_SHARED | MS_REC},
}};
constexpr std::array<std::string_view, 8> kTypes{"proc", "sysfs", "tmpfs", "devpts", "mqueue", "cgroup", "cgroup2", "bind"};

// RFC 4648 §4 base64, padded; anything else is refused.
Decoded<std::string> base64_decode(std::string_view in, const std::string& path) {
    auto value = [](char c) -> int {
        if (c >= 'A' && c <= 'Z') return c - 'A';
        if (c >= 'a' && c <= 'z') return c - 'a' + 26;
        if (c >= '0' && c <= '9') return c - '0' + 52;
        if (c == '+') return 62;
        if (c == '/') return 63;
        return -1;
    };
    if (in.size() % 4 != 0) return err(path + ": not base64 (length not a multiple of 4)");
    std::string out;
    out.reserve(in.size() / 4 * 3);
    for (size_t i = 0; i < in.size(); i += 4) {
        const bool last = i + 4 == in.size();
        const size_t pad = last ? (in[i + 3] == '=') + (in[i + 2] == '=' && in[i + 3] == '=') : 0;
        uint32_t v = 0;
        for (size_t k = 0; k < 4; ++k) {
            const int d = k >= 4 - pad ? 0 : value(in[i + k]);
            if (d < 0) return err(path + ": not base64");
            v = v << 6 | static_cast<uint32_t>(d);
        }
        out.push_back(static_cast<char>(v >> 16));
        if (pad < 2) out.push_back(static_cast<char>(v >> 8 & 0xff));
        if (pad < 1) out.push_back(static_cast<char>(v & 0xff));
    }
    return out;
}

// "files" of a kestrel-copy mount: one entry with path "" (a file), or 1..kMaxCopiedFiles
// entries with distinct relative paths (a directory; parents are made as needed).
Decoded<std::vector<CopiedFile>> decode_copied_files(const json& m, const std::string& path) {
    auto arr = opt_array(m, "files", path, kMaxCopiedFiles);
    if (!arr) return std::unexpected(arr.error());
    if (!*arr || (*arr)->empty()) return err(join(path, "files") + ": missing or empty");
    std::vector<CopiedFile> out;
    for (size_t i = 0; i < (*arr)->size(); ++i) {
        const auto where = index(join(path, "files"), i);
        const json& f = (**arr)[i];
        if (!f.is_object()) return err(where + ": expected an object");
        auto rel = need_string(f, "path", where, kMaxPathLen);
        if (!rel) return std::unexpected(rel.error());
        // A directory's entry: relative, components of 1-255 bytes, no . or .. (string_at
        // already refused NULs and kept it under PATH_MAX).
        if (rel->empty() ? (*arr)->size() != 1 : !clean_components(*rel, false))
            return err(join(where, "path") + ": \"\" for a single file, else a relative path without . or ..");
        auto b64 = need_string(f, "contents_base64", where, kMaxFrame);
        if (!b64) return std::unexpected(b64.error());
        auto contents = base64_decode(*b64, join(where, "contents_base64"));
        if (!contents) return std::unexpected(contents.error());
        uint32_t mode = 0644;
        if (find(f, "mode")) {
            auto md = need_u64(f, "mode", where, 07777);
            if (!md) return std::unexpected(md.error());
            mode = static_cast<uint32_t>(*md);
        }
        for (const auto& prev : out)
            if (prev.path == *rel) return err(join(where, "path") + ": \"" + *rel + "\" given twice");
        out.push_back({std::move(*rel), std::move(*contents), mode});
    }
    return out;
}

Decoded<Mount> decode_mount(const json& m, const std::string& path) {
    if (!m.is_object()) return err(path + ": expected an object");
    Mount out;
    const json* dest = find(m, "destination");
    if (!dest) return err(join(path, "destination") + ": missing");
    auto d = abs_path(*dest, join(path, "destination"));
    if (!d) return std::unexpected(d.error());
    out.destination = std::move(*d);
    auto type = opt_string(m, "type", path, 32);
    if (!type) return std::unexpected(type.error());
    auto source = opt_string(m, "source", path, kMaxPathLen);
    if (!source) return std::unexpected(source.error());
    out.source = std::move(*source);
    auto opts = string_list(m, "options", path, 64, false);
    if (!opts) return std::unexpected(opts.error());
    for (size_t i = 0; i < opts->size(); ++i) {
        const auto& o = (*opts)[i];
        if (o == "bind" || o == "rbind") {
            out.bind = true;
            out.recursive = out.recursive || o == "rbind";
            continue;
        }
        auto f = std::find_if(kFlags.begin(), kFlags.end(), [&](auto& x) { return x.name == o; });
        if (f != kFlags.end()) {
            if (f->clear) out.flags &= ~f->flag;
            else out.flags |= f->flag;
            continue;
        }
        auto p = std::find_if(kPropagation.begin(), kPropagation.end(), [&](auto& x) { return x.first == o; });
        if (p != kPropagation.end()) {
            out.propagation = p->second;
            continue;
        }
        if (o.empty() || o.find(',') != std::string::npos)
            return err(index(join(path, "options"), i) + ": not a mount option");
        if (!out.data.empty()) out.data += ',';
        out.data += o;
    }
    if (out.data.size() > 4095) return err(join(path, "options") + ": data longer than a page");
    if (*type == "kestrel-copy") {
        if (!out.source.empty()) return err(join(path, "source") + ": a kestrel-copy mount has none (the agent makes it)");
        auto files = decode_copied_files(m, path);
        if (!files) return std::unexpected(files.error());
        out.copy = true;
        out.files = std::move(*files);
        out.bind = true;
        out.type = "bind";
        return out;
    }
    if (*type == "kestrel-drive") {
        auto dev = device_path(json(out.source), join(path, "source"));
        if (!dev) return std::unexpected(dev.error());
        const json* sz = find(m, "size");
        if (!sz) return err(join(path, "size") + ": missing (a kestrel-drive mount waits for its drive's size)");
        auto n = drive_size(*sz, join(path, "size"));
        if (!n) return std::unexpected(n.error());
        out.source = std::move(*dev);
        out.drive_size = *n;
        out.bind = true;
        out.type = "bind";
        return out;
    }
    if (*type == "kestrel-pod-volume") {
        if (!valid_id(out.source)) return err(join(path, "source") + ": a pod volume's name, [A-Za-z0-9_.-]{1,128}");
        if (const json* mode = find(m, "mode")) {
            auto n = u64_at(*mode, join(path, "mode"), 07777);
            if (!n) return std::unexpected(n.error());
            out.pod_volume_mode = static_cast<uint32_t>(*n);
        }
        out.pod_volume = std::move(out.source);
        out.source.clear();
        out.bind = true;
        out.type = "bind";
        return out;
    }
    if (type->empty()) *type = out.bind ? "bind" : "";
    if (*type == "bind") out.bind = true;
    if (type->empty()) return err(join(path, "type") + ": missing (and no bind option)");
    if (!out.bind && std::find(kTypes.begin(), kTypes.end(), *type) == kTypes.end())
        return err(join(path, "type") + ": unsupported filesystem type \"" + *type +
                   "\" (proc, sysfs, tmpfs, devpts, mqueue, cgroup, cgroup2 or a bind mount)");
    out.type = out.bind ? "bind" : *type;
    if (out.bind) {
        if (out.source.empty() || out.source[0] != '/') return err(join(path, "source") + ": a bind mount needs an absolute source");
    }
    return out;
}

Decoded<Resources> decode_resources(const json& r) {
    const std::string where = "spec.linux.resources";
    Resources out;
    auto mem = opt_object(r, "memory", where);
    if (!mem) return std::unexpected(mem.error());
    if (*mem)
        if (const json* v = find(**mem, "limit")) {
            auto n = i64_at(*v, where + ".memory.limit");
            if (!n) return std::unexpected(n.error());
            if (*n < -1) return err(where + ".memory.limit: must be -1 or a byte count");
            out.memory_max = *n;
        }
    auto cpu = opt_object(r, "cpu", where);
    if (!cpu) return std::unexpected(cpu.error());
    if (*cpu) {
        const json* q = find(**cpu, "quota");
        const json* p = find(**cpu, "period");
        if (q || p) {
            int64_t quota = -1;
            uint64_t period = 100000;
            if (q) {
                auto n = i64_at(*q, where + ".cpu.quota");
                if (!n) return std::unexpected(n.error());
                quota = *n;
            }
            if (p) {
                // cgroup v2 cpu.max takes periods of 1 ms to 1 s.
                auto n = u64_at(*p, where + ".cpu.period", 1000000);
                if (!n) return std::unexpected(n.error());
                if (*n < 1000) return err(where + ".cpu.period: below 1000 us");
                period = *n;
            }
            if (quota == 0 || quota < -1) return err(where + ".cpu.quota: must be -1 or positive");
            out.cpu_max = (quota < 0 ? std::string("max") : std::to_string(quota)) + " " + std::to_string(period);
        }
    }
    auto pids = opt_object(r, "pids", where);
    if (!pids) return std::unexpected(pids.error());
    if (*pids)
        if (const json* v = find(**pids, "limit")) {
            auto n = i64_at(*v, where + ".pids.limit");
            if (!n) return std::unexpected(n.error());
            out.pids_max = *n;
        }
    return out;
}

Decoded<Spec> decode_spec(const json& s) {
    Spec out;
    auto proc = need_object(s, "process", "spec");
    if (!proc) return std::unexpected(proc.error());
    auto p = decode_process(**proc, "spec.process");
    if (!p) return std::unexpected(p.error());
    out.process = std::move(*p);
    auto host = opt_string(s, "hostname", "spec", kMaxHostname);
    if (!host) return std::unexpected(host.error());
    out.hostname = std::move(*host);
    auto root = opt_object(s, "root", "spec");
    if (!root) return std::unexpected(root.error());
    if (*root) {
        auto ro = opt_bool(**root, "readonly", "spec.root");
        if (!ro) return std::unexpected(ro.error());
        out.root_readonly = *ro;
    }
    auto mounts = opt_array(s, "mounts", "spec", kMaxMounts);
    if (!mounts) return std::unexpected(mounts.error());
    if (*mounts)
        for (size_t i = 0; i < (*mounts)->size(); ++i) {
            auto m = decode_mount((**mounts)[i], index("spec.mounts", i));
            if (!m) return std::unexpected(m.error());
            out.mounts.push_back(std::move(*m));
        }
    auto linux_ = opt_object(s, "linux", "spec");
    if (!linux_) return std::unexpected(linux_.error());
    if (*linux_) {
        const json& l = **linux_;
        auto ns = opt_array(l, "namespaces", "spec.linux", 16);
        if (!ns) return std::unexpected(ns.error());
        if (*ns)
            for (size_t i = 0; i < (*ns)->size(); ++i) {
                const auto path = index("spec.linux.namespaces", i);
                const json& n = (**ns)[i];
                if (!n.is_object()) return err(path + ": expected an object");
                auto type = need_string(n, "type", path, 16);
                if (!type) return std::unexpected(type.error());
                if (*type == "user") return err(path + ": a user namespace is not supported by kestrel-agent");
                if (*type == "network") out.network_namespace = true;
                else if (*type != "pid" && *type != "mount" && *type != "ipc" && *type != "uts" && *type != "cgroup" &&
                         *type != "time")
                    return err(join(path, "type") + ": unknown namespace type \"" + *type + "\"");
            }
        auto res = opt_object(l, "resources", "spec.linux");
        if (!res) return std::unexpected(res.error());
        if (*res) {
            auto r = decode_resources(**res);
            if (!r) return std::unexpected(r.error());
            out.resources = std::move(*r);
        }
        for (auto [key, dst] : {std::pair{"maskedPaths", &out.masked_paths}, std::pair{"readonlyPaths", &out.readonly_paths}}) {
            auto arr = opt_array(l, key, "spec.linux", kMaxPaths);
            if (!arr) return std::unexpected(arr.error());
            if (*arr)
                for (size_t i = 0; i < (*arr)->size(); ++i) {
                    auto path = abs_path((**arr)[i], index(join("spec.linux", key), i));
                    if (!path) return std::unexpected(path.error());
                    dst->push_back(std::move(*path));
                }
        }
    }
    return out;
}

Decoded<Stdio> decode_stdio(const json& o) {
    Stdio out;
    auto st = opt_object(o, "stdio", "");
    if (!st) return std::unexpected(st.error());
    if (!*st) return out;
    for (auto [key, dst] : {std::pair{"stdin", &out.in}, std::pair{"stdout", &out.out}, std::pair{"stderr", &out.err},
                            std::pair{"terminal", &out.terminal}}) {
        auto b = opt_bool(**st, key, "stdio");
        if (!b) return std::unexpected(b.error());
        *dst = *b;
    }
    if (out.terminal) out.err = false;  // one pty carries both; "stderr" attaches are refused
    return out;
}

Decoded<Rootfs> decode_rootfs(const json& o) {
    auto r = need_object(o, "rootfs", "");
    if (!r) return std::unexpected(r.error());
    const json& j = **r;
    Rootfs out;
    if (const json* p = find(j, "path")) {
        if (find(j, "device")) return err("rootfs: give either path or device, not both");
        auto path = abs_path(*p, "rootfs.path");
        if (!path) return std::unexpected(path.error());
        out.path = std::move(*path);
        return out;
    }
    const json* d = find(j, "device");
    if (!d) return err("rootfs.path: missing (or rootfs.device)");
    auto dev = device_path(*d, "rootfs.device");
    if (!dev) return std::unexpected(dev.error());
    out.device = std::move(*dev);
    auto fs = need_string(j, "fstype", "rootfs", 16);
    if (!fs) return std::unexpected(fs.error());
    if (*fs != "ext4" && *fs != "erofs") return err("rootfs.fstype: must be ext4 or erofs");
    out.fstype = std::move(*fs);
    auto wl = opt_bool(j, "writable_layer", "rootfs");
    if (!wl) return std::unexpected(wl.error());
    out.writable_layer = *wl;
    if (const json* sz = find(j, "size")) {
        auto n = drive_size(*sz, "rootfs.size");
        if (!n) return std::unexpected(n.error());
        out.size = *n;
    }
    return out;
}

// "10.88.0.5" / "fd00::5" -> family and bytes. inet_pton takes no prefix, no scope id and
// no leading/trailing junk, so anything it accepts is exactly an address.
Decoded<IpPrefix> ip_at(std::string_view text, const std::string& path) {
    IpPrefix out;
    const std::string t(text);
    if (t.size() < 46 && ::inet_pton(AF_INET, t.c_str(), out.addr.data()) == 1) {
        out.family = AF_INET;
        out.prefix_len = 32;
    } else if (t.size() < 46 && ::inet_pton(AF_INET6, t.c_str(), out.addr.data()) == 1) {
        out.family = AF_INET6;
        out.prefix_len = 128;
    } else {
        return err(path + ": not an IPv4 or IPv6 address");
    }
    return out;
}

// "ADDRESS/LEN".
Decoded<IpPrefix> prefix_at(const json& v, const std::string& path) {
    auto s = string_at(v, path, 64, false);
    if (!s) return std::unexpected(s.error());
    const auto slash = s->find('/');
    if (slash == std::string::npos) return err(path + ": expected ADDRESS/PREFIXLEN");
    auto p = ip_at(std::string_view(*s).substr(0, slash), path);
    if (!p) return p;
    const std::string len = s->substr(slash + 1);
    if (len.empty() || len.size() > 3 || !std::all_of(len.begin(), len.end(), [](char c) { return c >= '0' && c <= '9'; }))
        return err(path + ": prefix length must be a number");
    const unsigned n = static_cast<unsigned>(std::stoul(len));
    if (n > p->prefix_len) return err(path + ": prefix length above " + std::to_string(p->prefix_len));
    p->prefix_len = static_cast<uint8_t>(n);
    return p;
}

bool host_bits_clear(const IpPrefix& p) {
    const size_t bytes = p.family == AF_INET ? 4 : 16;
    for (size_t i = 0; i < bytes; ++i) {
        const size_t first_bit = i * 8;
        uint8_t keep = 0;
        if (first_bit + 8 <= p.prefix_len) keep = 0xff;
        else if (first_bit < p.prefix_len) keep = static_cast<uint8_t>(0xff00u >> (p.prefix_len - first_bit));
        if (p.addr[i] & ~keep) return false;
    }
    return true;
}

// "aa:bb:cc:dd:ee:ff": a unicast, non-zero Ethernet address.
Decoded<std::array<uint8_t, 6>> mac_at(const json& v, const std::string& path) {
    auto s = string_at(v, path, 17, false);
    if (!s) return std::unexpected(s.error());
    std::array<uint8_t, 6> mac{};
    auto hex = [](char c) -> int {
        if (c >= '0' && c <= '9') return c - '0';
        if (c >= 'a' && c <= 'f') return c - 'a' + 10;
        if (c >= 'A' && c <= 'F') return c - 'A' + 10;
        return -1;
    };
    if (s->size() != 17) return err(path + ": expected a MAC address aa:bb:cc:dd:ee:ff");
    for (size_t i = 0; i < 6; ++i) {
        const int hi = hex((*s)[i * 3]), lo = hex((*s)[i * 3 + 1]);
        if (hi < 0 || lo < 0 || (i < 5 && (*s)[i * 3 + 2] != ':')) return err(path + ": expected a MAC address aa:bb:cc:dd:ee:ff");
        mac[i] = static_cast<uint8_t>(hi << 4 | lo);
    }
    if (mac[0] & 1) return err(path + ": a multicast MAC address");
    if (mac == std::array<uint8_t, 6>{}) return err(path + ": the all-zero MAC address");
    return mac;
}

Decoded<NetInterface> decode_interface(const json& o, const std::string& path) {
    if (!o.is_object()) return err(path + ": expected an object");
    NetInterface out;
    auto name = opt_string(o, "name", path, 15);
    if (!name) return std::unexpected(name.error());
    out.name = std::move(*name);
    const json* mac = find(o, "mac");
    if (!mac) return err(join(path, "mac") + ": missing");
    auto m = mac_at(*mac, join(path, "mac"));
    if (!m) return std::unexpected(m.error());
    out.mac = *m;
    auto mtu = need_u64(o, "mtu", path, 65535);
    if (!mtu) return std::unexpected(mtu.error());
    if (*mtu < 68) return err(join(path, "mtu") + ": below 68 (RFC 791's minimum)");
    out.mtu = static_cast<uint32_t>(*mtu);
    auto addrs = opt_array(o, "addresses", path, kMaxNetAddresses);
    if (!addrs) return std::unexpected(addrs.error());
    if (*addrs)
        for (size_t i = 0; i < (*addrs)->size(); ++i) {
            auto a = prefix_at((**addrs)[i], index(join(path, "addresses"), i));
            if (!a) return std::unexpected(a.error());
            out.addresses.push_back(*a);
        }
    auto routes = opt_array(o, "routes", path, kMaxNetRoutes);
    if (!routes) return std::unexpected(routes.error());
    if (*routes)
        for (size_t i = 0; i < (*routes)->size(); ++i) {
            const auto rp = index(join(path, "routes"), i);
            const json& r = (**routes)[i];
            if (!r.is_object()) return err(rp + ": expected an object");
            const json* dst = find(r, "dst");
            if (!dst) return err(join(rp, "dst") + ": missing");
            auto d = prefix_at(*dst, join(rp, "dst"));
            if (!d) return std::unexpected(d.error());
            if (!host_bits_clear(*d)) return err(join(rp, "dst") + ": host bits set beyond the prefix length");
            NetRoute route{*d, std::nullopt};
            if (const json* via = find(r, "via")) {
                auto vs = string_at(*via, join(rp, "via"), 46, false);
                if (!vs) return std::unexpected(vs.error());
                auto g = ip_at(*vs, join(rp, "via"));
                if (!g) return std::unexpected(g.error());
                if (g->family != d->family) return err(join(rp, "via") + ": not of the destination's address family");
                route.via = *g;
            }
            out.routes.push_back(route);
        }
    return out;
}

Decoded<Network> decode_network(const json& j) {
    const json* v = find(j, "interfaces");
    if (!v) return err("interfaces: missing");
    if (!v->is_array()) return err("interfaces: expected an array");
    if (v->empty()) return err("interfaces: empty");
    if (v->size() > kMaxNetInterfaces) return err("interfaces: more than " + std::to_string(kMaxNetInterfaces) + " entries");
    Network out;
    for (size_t i = 0; i < v->size(); ++i) {
        auto itf = decode_interface((*v)[i], index("interfaces", i));
        if (!itf) return std::unexpected(itf.error());
        for (const auto& other : out.interfaces)
            if (other.mac == itf->mac) return err(index("interfaces", i) + ".mac: given twice");
        out.interfaces.push_back(std::move(*itf));
    }
    return out;
}

Decoded<Body> decode_body(const json& j, std::string_view op) {
    if (op == "ping") return Ping{};
    if (op == "shutdown") return Shutdown{};
    if (op == "network") {
        auto n = decode_network(j);
        if (!n) return std::unexpected(n.error());
        return std::move(*n);
    }
    auto c = need_id(j, "container");
    if (!c) return std::unexpected(c.error());
    if (op == "create") {
        auto spec = need_object(j, "spec", "");
        if (!spec) return std::unexpected(spec.error());
        auto s = decode_spec(**spec);
        if (!s) return std::unexpected(s.error());
        auto root = decode_rootfs(j);
        if (!root) return std::unexpected(root.error());
        auto stdio = decode_stdio(j);
        if (!stdio) return std::unexpected(stdio.error());
        return Create{*c, std::move(*s), std::move(*root), *stdio};
    }
    if (op == "pids") return Pids{*c};
    if (op == "stats") return Stats{*c};
    if (op == "delete") {
        if (!find(j, "exec")) return Delete{*c, std::nullopt};
        auto e = exec_id(j, true);
        if (!e) return std::unexpected(e.error());
        if (e->empty()) return err("exec: delete the container to forget its init process");
        return Delete{*c, *e};
    }
    if (op == "exec") {
        auto e = exec_id(j, true);
        if (!e) return std::unexpected(e.error());
        if (e->empty()) return err("exec: must not be \"\" (that is the init process)");
        auto proc = need_object(j, "process", "");
        if (!proc) return std::unexpected(proc.error());
        auto p = decode_process(**proc, "process");
        if (!p) return std::unexpected(p.error());
        auto stdio = decode_stdio(j);
        if (!stdio) return std::unexpected(stdio.error());
        return Exec{*c, *e, std::move(*p), *stdio};
    }
    auto e = exec_id(j, false);
    if (!e) return std::unexpected(e.error());
    if (op == "start") return Start{*c, *e};
    if (op == "state") return State{*c, *e};
    if (op == "close_stdin") return CloseStdin{*c, *e};
    if (op == "signal") {
        auto n = need_u64(j, "signal", "", 64);
        if (!n) return std::unexpected(n.error());
        if (*n == 0) return err("signal: must be 1-64");
        auto all = opt_bool(j, "all", "");
        if (!all) return std::unexpected(all.error());
        return Signal{*c, *e, static_cast<int>(*n), *all};
    }
    if (op == "resize") {
        auto w = need_u64(j, "width", "", UINT16_MAX);
        if (!w) return std::unexpected(w.error());
        auto h = need_u64(j, "height", "", UINT16_MAX);
        if (!h) return std::unexpected(h.error());
        return Resize{*c, *e, static_cast<uint16_t>(*w), static_cast<uint16_t>(*h)};
    }
    if (op == "attach") {
        auto s = need_string(j, "stream", "", 8);
        if (!s) return std::unexpected(s.error());
        Stream stream;
        if (*s == "stdin") stream = Stream::Stdin;
        else if (*s == "stdout") stream = Stream::Stdout;
        else if (*s == "stderr") stream = Stream::Stderr;
        else return err("stream: must be stdin, stdout or stderr");
        return Attach{*c, *e, stream};
    }
    return err("op: unknown operation");  // kOps in decode_request lists every op above
}

}  // namespace

Decoded<uint32_t> frame_length(std::span<const uint8_t, 4> h) {
    const uint32_t n = (uint32_t{h[0]} << 24) | (uint32_t{h[1]} << 16) | (uint32_t{h[2]} << 8) | uint32_t{h[3]};
    if (n == 0) return err("frame length: 0 (a frame holds one JSON object)");
    if (n > kMaxFrame) return err("frame length: " + std::to_string(n) + " above the 1 MiB limit");
    return n;
}

bool valid_id(std::string_view id) {
    if (id.empty() || id.size() > 128 || id == "." || id == "..") return false;
    return std::all_of(id.begin(), id.end(), [](char c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '.' ||
               c == '-';
    });
}

Decoded<Request> decode_request(std::string_view payload) {
    if (payload.size() > kMaxFrame) return err("frame: above the 1 MiB limit");
    if (!depth_ok(payload)) return err("frame: JSON nested deeper than " + std::to_string(kMaxDepth));
    const json j = json::parse(payload, nullptr, false);
    if (j.is_discarded()) return err("frame: not valid JSON (UTF-8)");
    if (!j.is_object()) return err("frame: expected a JSON object");
    const json* op = find(j, "op");
    if (!op) return err("op: missing");
    if (!op->is_string()) return err("op: expected a string");
    const auto& name = op->get_ref<const std::string&>();
    static constexpr std::string_view kOps[] = {"ping", "create", "exec", "start", "signal", "state", "resize",
                                                "close_stdin", "pids", "stats", "delete", "shutdown", "attach", "network"};
    if (std::find(std::begin(kOps), std::end(kOps), name) == std::end(kOps)) {
        DecodeError e{"op: unknown operation \"" + name.substr(0, 64) + "\"", {}};
        if (const json* id = find(j, "id"); id && id->is_number_unsigned()) e.id = id->get<uint64_t>();
        return std::unexpected(std::move(e));
    }
    Request out;
    // attach has no id (it is a stream's first and only frame); one given is kept so a
    // misplaced attach on a control connection is answered under it.
    if (name != "attach" || find(j, "id")) {
        auto id = need_u64(j, "id", "", UINT64_MAX);
        if (!id) return std::unexpected(id.error());
        out.id = *id;
    }
    auto body = decode_body(j, name);
    if (!body) {
        DecodeError e = std::move(body).error();
        if (name != "attach" || find(j, "id")) e.id = out.id;
        return std::unexpected(std::move(e));
    }
    out.body = std::move(*body);
    return out;
}

}  // namespace kestrel::agent
