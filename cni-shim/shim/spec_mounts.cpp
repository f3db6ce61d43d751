#include "cni-shim/shim/spec_mounts.hpp"

#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>

#include <fmt/format.h>

#include "cni-shim/shim/pod_key.hpp"
#include "vmm/base/fd.hpp"

namespace kestrel::shim {

namespace {

std::string string_at(const nlohmann::json& m, const char* key) {
    auto it = m.find(key);
    return it != m.end() && it->is_string() ? it->get<std::string>() : std::string();
}

// runtime-spec config.md#mounts: a bind is type "bind" or a "bind"/"rbind" option.
bool is_bind(const nlohmann::json& m) {
    if (string_at(m, "type") == "bind") return true;
    auto opts = m.find("options");
    if (opts == m.end() || !opts->is_array()) return false;
    return std::any_of(opts->begin(), opts->end(), [](const nlohmann::json& o) {
        return o.is_string() && (o == "bind" || o == "rbind");
    });
}

bool has_option(const nlohmann::json& m, std::string_view opt) {
    auto opts = m.find("options");
    if (opts == m.end() || !opts->is_array()) return false;
    return std::any_of(opts->begin(), opts->end(), [&](const nlohmann::json& o) { return o.is_string() && o == opt; });
}

// Reads a regular file (following symlinks) of at most `budget` bytes, which it takes.
std::optional<std::string> read_small(const std::string& path, std::size_t& budget, std::string& why) {
    UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK));
    struct stat st {};
    if (!fd || ::fstat(fd.get(), &st) < 0) {
        why = path + ": " + std::strerror(errno);
        return std::nullopt;
    }
    if (!S_ISREG(st.st_mode)) {
        why = path + ": not a regular file";
        return std::nullopt;
    }
    if (static_cast<std::size_t>(st.st_size) > budget) {
        why = fmt::format("{}: {} bytes, over the {} KiB a container's copied files may hold", path, st.st_size, kCopyBudgetBytes / 1024);
        return std::nullopt;
    }
    std::string data(static_cast<std::size_t>(st.st_size), '\0');
    std::size_t got = 0;
    while (got < data.size()) {
        const ssize_t n = ::read(fd.get(), data.data() + got, data.size() - got);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        got += static_cast<std::size_t>(n);
    }
    data.resize(got);  // a file that shrank meanwhile; one that grew is cut at its size
    budget -= got;
    return data;
}

// The regular files below `dir` (see guest_mounts), as kestrel-copy entries.
bool collect_dir(const std::string& dir, const std::string& rel, int depth, nlohmann::json& files, std::size_t& budget,
                 std::string& why) {
    std::error_code ec;
    std::vector<std::string> names;
    for (auto it = std::filesystem::directory_iterator(dir, ec); !ec && it != std::filesystem::directory_iterator(); it.increment(ec)) {
        if (names.size() == 4 * kCopyMaxFiles) {  // a huge directory is not listed to its end
            why = fmt::format("{}: more than {} entries", dir, names.size());
            return false;
        }
        names.push_back(it->path().filename().string());
    }
    if (ec) {
        why = dir + ": " + ec.message();
        return false;
    }
    std::sort(names.begin(), names.end());
    for (const auto& name : names) {
        if (name.starts_with("..")) continue;
        const std::string path = dir + "/" + name, r = rel.empty() ? name : rel + "/" + name;
        struct stat st {};
        if (::stat(path.c_str(), &st) < 0) {
            why = path + ": " + std::strerror(errno);
            return false;
        }
        if (S_ISDIR(st.st_mode)) {
            if (depth >= kCopyMaxDepth) {
                why = fmt::format("{}: deeper than {} directories", path, kCopyMaxDepth);
                return false;
            }
            if (!collect_dir(path, r, depth + 1, files, budget, why)) return false;
            continue;
        }
        // Never opened unless regular: opening a device node can act (a watchdog arms).
        if (!S_ISREG(st.st_mode)) {
            why = path + ": neither a regular file nor a directory";
            return false;
        }
        if (files.size() >= kCopyMaxFiles) {
            why = fmt::format("{}: more than {} files", dir, kCopyMaxFiles);
            return false;
        }
        auto data = read_small(path, budget, why);
        if (!data) return false;
        files.push_back({{"path", r}, {"contents_base64", base64_encode(*data)}, {"mode", st.st_mode & 07777}});
    }
    return true;
}

// The volume name of a kubelet emptyDir directory, .../volumes/kubernetes.io~empty-dir/<name>
// (the kubelet's pod volume layout); a DNS label, so also a valid pod volume name.
std::optional<std::string> empty_dir_name(const std::string& src) {
    static constexpr std::string_view kDir = "/volumes/kubernetes.io~empty-dir/";
    const auto at = src.rfind(kDir);
    if (at == std::string::npos) return std::nullopt;
    std::string name = src.substr(at + kDir.size());
    if (name.ends_with('/')) name.pop_back();
    if (name.empty() || name.size() > 63 || name == "." || name == ".." ||
        !std::all_of(name.begin(), name.end(), [](char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '.'; }))
        return std::nullopt;
    return name;
}

}  // namespace

std::string base64_encode(std::string_view data) {
    static constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    std::string out;
    out.reserve((data.size() + 2) / 3 * 4);
    for (std::size_t i = 0; i < data.size(); i += 3) {
        const std::size_t n = std::min<std::size_t>(3, data.size() - i);
        std::uint32_t v = 0;
        for (std::size_t k = 0; k < 3; ++k) v = v << 8 | (k < n ? static_cast<unsigned char>(data[i + k]) : 0u);
        for (std::size_t k = 0; k < 4; ++k) out.push_back(k <= n ? kAlphabet[v >> (18 - 6 * k) & 63] : '=');
    }
    return out;
}

GuestMounts guest_mounts(nlohmann::json& config) {
    GuestMounts out;
    auto& changes = out.changes;
    auto mounts = config.find("mounts");
    if (mounts == config.end() || !mounts->is_array()) return out;
    nlohmann::json kept = nlohmann::json::array();
    std::size_t budget = kCopyBudgetBytes;
    for (auto& m : *mounts) {
        if (!m.is_object() || !is_bind(m)) {
            kept.push_back(std::move(m));
            continue;
        }
        const std::string dst = string_at(m, "destination"), src = string_at(m, "source");
        if (dst == "/dev/shm") {
            // The sandbox's shm, which the CRI plugin binds into each of the pod's containers:
            // one directory of the pod's in the guest's RAM, shared the same way.
            kept.push_back({{"destination", "/dev/shm"}, {"type", "kestrel-pod-volume"}, {"source", "shm"}, {"mode", 01777},
                            {"options", {"nosuid", "noexec", "nodev"}}});
            changes.push_back("bind mount " + src + " on /dev/shm: the pod's shared /dev/shm in the VM instead");
            continue;
        }
        if (auto name = empty_dir_name(src)) {
            nlohmann::json vol = m;
            vol["type"] = "kestrel-pod-volume";
            vol["source"] = "empty-dir-" + *name;
            kept.push_back(std::move(vol));
            changes.push_back(fmt::format("bind mount {} on {}: emptyDir {}, the pod's own directory in the VM instead", src, dst, *name));
            continue;
        }
        if (dst == "/dev/termination-log") {
            changes.push_back("bind mount " + src + " on /dev/termination-log: not in the pod VM, dropped (the termination "
                              "message comes from the container's log)");
            continue;
        }
        const bool cri_file = dst == "/etc/hosts" || dst == "/etc/hostname" || dst == "/etc/resolv.conf";
        const bool read_only = has_option(m, "ro");
        struct stat st {};
        std::string why;
        if (!cri_file && !read_only) {
            why = "read-write: a copy would not be shared with the node or the pod's other containers; use an emptyDir or a block volume";
        } else if (::stat(src.c_str(), &st) < 0) {
            why = std::strerror(errno);
        } else if (S_ISREG(st.st_mode) || S_ISDIR(st.st_mode)) {
            // A file is one entry with path ""; a directory, its regular files below it.
            const std::size_t before = budget;
            nlohmann::json files = nlohmann::json::array();
            bool ok = true;
            if (S_ISDIR(st.st_mode)) {
                ok = collect_dir(src, "", 0, files, budget, why);
            } else if (auto data = read_small(src, budget, why)) {
                files.push_back({{"path", ""}, {"contents_base64", base64_encode(*data)}, {"mode", st.st_mode & 07777}});
            } else {
                ok = false;
            }
            if (ok) {
                const std::size_t n = files.size();
                nlohmann::json copy = m;
                copy.erase("source");
                if (n == 0) {  // an empty directory
                    copy["type"] = "tmpfs";
                    copy["source"] = "tmpfs";
                    copy["options"] = {"ro", "nosuid", "nodev", "noexec", "mode=0755", "size=4k"};
                } else {
                    copy["type"] = "kestrel-copy";
                    copy["files"] = std::move(files);
                }
                kept.push_back(std::move(copy));
                changes.push_back(fmt::format("bind mount {} on {}: copied into the pod VM ({} file{}, {} bytes{})", src, dst, n,
                                              n == 1 ? "" : "s", before - budget, read_only ? ", read-only" : ""));
                continue;
            }
            budget = before;
        } else {
            why = "neither a regular file nor a directory";
        }
        out.unsupported.push_back("bind mount " + src + " on " + dst + ": a node path a kestrel pod VM cannot have (" + why + ")");
        changes.push_back(out.unsupported.back());
    }
    *mounts = std::move(kept);
    return out;
}

namespace {

// A device number field: absent, null or -1 is a wildcard (config-linux.md#allowed-device-list).
std::optional<std::int64_t> device_number(const nlohmann::json& o, const char* key) {
    auto it = o.find(key);
    if (it == o.end() || it->is_null()) return -1;
    if (!it->is_number_integer()) return std::nullopt;
    return it->get<std::int64_t>();
}

// Whether linux.resources.devices lets the container write block device major:minor: the
// rules apply in order and the last that matches decides (as runc's device filter does);
// without a list nothing is restricted.
bool writable(const nlohmann::json& config, std::int64_t major, std::int64_t minor) {
    const nlohmann::json* rules = nullptr;
    if (auto l = config.find("linux"); l != config.end() && l->is_object())
        if (auto r = l->find("resources"); r != l->end() && r->is_object())
            if (auto d = r->find("devices"); d != r->end() && d->is_array()) rules = &*d;
    if (!rules) return true;
    bool allowed = false;
    for (const auto& rule : *rules) {
        if (!rule.is_object()) continue;
        const std::string type = string_at(rule, "type");
        const std::string access = rule.contains("access") ? string_at(rule, "access") : "rwm";
        auto ma = device_number(rule, "major"), mi = device_number(rule, "minor");
        auto allow = rule.find("allow");
        if (!ma || !mi || allow == rule.end() || !allow->is_boolean()) continue;
        if (!type.empty() && type != "a" && type != "b") continue;
        if ((*ma != -1 && *ma != major) || (*mi != -1 && *mi != minor)) continue;
        if (access.find('w') == std::string::npos) continue;
        allowed = allow->get<bool>();
    }
    return allowed;
}

}  // namespace

Result<std::vector<BlockDevice>> block_devices(const nlohmann::json& config) {
    std::vector<BlockDevice> out;
    auto l = config.find("linux");
    if (l == config.end() || !l->is_object()) return out;
    auto devs = l->find("devices");
    if (devs == l->end() || devs->is_null()) return out;
    if (!devs->is_array()) return bad_request("linux.devices: expected an array");
    if (devs->size() > 16) return bad_request("linux.devices: {} devices, more than the 16 a kestrel pod takes", devs->size());
    for (std::size_t i = 0; i < devs->size(); ++i) {
        const auto& d = (*devs)[i];
        if (!d.is_object()) return bad_request("linux.devices[{}]: expected an object", i);
        const std::string path = string_at(d, "path"), type = string_at(d, "type");
        if (!clean_absolute_path(path))
            return bad_request("linux.devices[{}].path: must be an absolute path without '..'", i);
        if (type != "b") {
            return bad_request("linux.devices[{}]: {} is a {} device; only block devices (volumeDevices) can be passed into a kestrel pod VM",
                               i, path, type == "c" || type == "u" ? "character" : type == "p" ? "FIFO" : "\"" + type.substr(0, 8) + "\"");
        }
        auto ma = device_number(d, "major"), mi = device_number(d, "minor");
        if (!ma || !mi || *ma < 0 || *mi < 0 || *ma > 0xfff || *mi > 0xfffff)
            return bad_request("linux.devices[{}]: {} needs a major (0..4095) and a minor (0..1048575)", i, path);
        for (const auto& prev : out)
            if (prev.container_path == path) return bad_request("linux.devices[{}]: {} given twice", i, path);
        out.push_back({path, static_cast<std::uint32_t>(*ma), static_cast<std::uint32_t>(*mi), !writable(config, *ma, *mi)});
    }
    return out;
}

Result<std::string> host_block_device(std::uint32_t major, std::uint32_t minor, const std::string& sysfs, const std::string& dev) {
    const std::string uevent = fmt::format("{}/dev/block/{}:{}/uevent", sysfs, major, minor);
    std::ifstream in(uevent);
    if (!in) return not_allowed("no block device {}:{} on this host ({} is missing)", major, minor, uevent);
    std::string line, name;
    while (std::getline(in, line))
        if (line.starts_with("DEVNAME=")) name = line.substr(8);
    if (name.empty() || name.size() > 255 || name.front() == '/' || name.find("..") != std::string::npos)
        return fail("{}: no usable DEVNAME", uevent);
    const std::string path = dev + "/" + name;
    struct stat st {};
    if (::stat(path.c_str(), &st) < 0) return fail_errno("block device {}:{}: {}", major, minor, path);
    if (!S_ISBLK(st.st_mode) || st.st_rdev != makedev(major, minor))
        return fail("{} is not block device {}:{}", path, major, minor);
    return path;
}

Result<std::uint64_t> block_device_bytes(const std::string& path) {
    UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK));
    if (!fd) return fail_errno("open {}", path);
    std::uint64_t bytes = 0;
    if (::ioctl(fd.get(), BLKGETSIZE64, &bytes) < 0) return fail_errno("size of {} (BLKGETSIZE64)", path);
    if (bytes < 512) return bad_request("{} holds {} bytes: an empty block volume cannot be a drive", path, bytes);
    return bytes;
}

}  // namespace kestrel::shim
