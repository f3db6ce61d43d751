#include "cni-shim/shim/spec_mounts.hpp"

#include <algorithm>

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

}  // namespace

std::vector<std::string> guest_mounts(nlohmann::json& config) {
    std::vector<std::string> changes;
    auto mounts = config.find("mounts");
    if (mounts == config.end() || !mounts->is_array()) return changes;
    nlohmann::json kept = nlohmann::json::array();
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
        } else {
            changes.push_back("bind mount " + src + " on " + dst + ": a host path, not in the pod VM: dropped");
        }
    }
    *mounts = std::move(kept);
    return changes;
}

}  // namespace kestrel::shim
