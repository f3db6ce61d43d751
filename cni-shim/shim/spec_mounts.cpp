#include "cni-shim/shim/spec_mounts.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <optional>

#include <fmt/format.h>

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

std::vector<std::string> guest_mounts(nlohmann::json& config) {
    std::vector<std::string> changes;
    auto mounts = config.find("mounts");
    if (mounts == config.end() || !mounts->is_array()) return changes;
    nlohmann::json kept = nlohmann::json::array();
    std::size_t budget = kCopyBudgetBytes;
    for (auto& m : *mounts) {
        if (!m.is_object() || !is_bind(m)) {
            kept.push_back(std::move(m));
            continue;
        }
        const std::string dst = string_at(m, "destination"), src = string_at(m, "source");
        if (dst == "/dev/shm") {
            // 64 MiB: the size the CRI plugin gives the sandbox's own shm tmpfs.
            kept.push_back({{"destination", "/dev/shm"}, {"type", "tmpfs"}, {"source", "shm"},
                            {"options", {"nosuid", "noexec", "nodev", "mode=1777", "size=65536k"}}});
            changes.push_back("bind mount " + src + " on /dev/shm: a tmpfs in the pod VM instead");
            continue;
        }
        const bool cri_file = dst == "/etc/hosts" || dst == "/etc/hostname" || dst == "/etc/resolv.conf";
        const bool read_only = has_option(m, "ro");
        struct stat st {};
        std::string why;
        if (!cri_file && !read_only) {
            why = "read-write: a copy would not be shared with the host or the pod's other containers";
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
        changes.push_back("bind mount " + src + " on " + dst + ": a host path, not in the pod VM: dropped (" + why + ")");
    }
    *mounts = std::move(kept);
    return changes;
}

}  // namespace kestrel::shim
