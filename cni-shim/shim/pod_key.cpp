#include "cni-shim/shim/pod_key.hpp"

#include <sys/stat.h>

#include <cstdint>
#include <fstream>
#include <sstream>

#include <fmt/format.h>

namespace kestrel::shim {

bool clean_absolute_path(std::string_view p, std::size_t max) {
    return !p.empty() && p.front() == '/' && p.size() <= max && p.find('\0') == std::string_view::npos &&
           p.find("/../") == std::string_view::npos && !p.ends_with("/..");
}

bool valid_identifier(std::string_view id) {
    if (id.empty() || id.size() > 76) return false;
    auto alnum = [](char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'); };
    bool prev_sep = true;  // no separator first
    for (char c : id) {
        if (alnum(c)) {
            prev_sep = false;
        } else if (c == '.' || c == '_' || c == '-') {
            if (prev_sep) return false;
            prev_sep = true;
        } else {
            return false;
        }
    }
    return !prev_sep;  // nor last
}

Result<PodMembership> pod_membership(const nlohmann::json& config, std::string_view container_id) {
    if (!valid_identifier(container_id)) return bad_request("container id '{}' is not a valid identifier", container_id);
    PodMembership m{std::string(container_id), true};
    if (!config.is_object()) return bad_request("config.json: not a JSON object");
    auto ann = config.find("annotations");
    if (ann == config.end() || ann->is_null()) return m;
    if (!ann->is_object()) return bad_request("config.json: annotations: not an object");
    auto sid = ann->find(kSandboxIdAnnotation);
    if (sid == ann->end()) return m;
    if (!sid->is_string()) return bad_request("config.json: annotations.{}: not a string", kSandboxIdAnnotation);
    const auto& s = sid->get_ref<const std::string&>();
    if (!valid_identifier(s)) return bad_request("config.json: annotations.{}: '{}' is not a valid identifier", kSandboxIdAnnotation, s);
    m.group = s;
    m.is_sandbox = s == container_id;
    // The CRI plugin also says which kind it is; trust the two to agree, else refuse.
    auto type = ann->find(kContainerTypeAnnotation);
    if (type != ann->end() && type->is_string()) {
        bool says_sandbox = type->get_ref<const std::string&>() == "sandbox";
        if (says_sandbox != m.is_sandbox) {
            return bad_request("config.json: annotations disagree: {} is {} but {} is '{}'", kSandboxIdAnnotation, s,
                               kContainerTypeAnnotation, type->get_ref<const std::string&>());
        }
    }
    return m;
}

Result<nlohmann::json> read_bundle_config(const std::string& bundle_dir) {
    std::string path = bundle_dir + "/config.json";
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0) return fail_errno("{}", path);
    if (!S_ISREG(st.st_mode)) return bad_request("{}: not a regular file", path);
    if (st.st_size > 4 * 1024 * 1024) return bad_request("{}: {} bytes, more than 4 MiB", path, st.st_size);
    std::ifstream in(path, std::ios::binary);
    if (!in) return fail_errno("open {}", path);
    std::stringstream ss;
    ss << in.rdbuf();
    auto j = nlohmann::json::parse(ss.str(), nullptr, false);
    if (j.is_discarded()) return bad_request("{}: not valid JSON", path);
    return j;
}

std::string pod_key(std::string_view containerd_address, std::string_view ns, std::string_view group) {
    // FNV-1a 64 over the three with separators that cannot occur in identifiers. Not a
    // security boundary: `start` connects to what it finds and a stale or foreign socket
    // only means this pod gets no shim (containerd reports the error).
    std::uint64_t h = 0xcbf29ce484222325ULL;
    auto mix = [&](std::string_view s) {
        for (unsigned char c : s) {
            h ^= c;
            h *= 0x100000001b3ULL;
        }
        h ^= 0xff;
        h *= 0x100000001b3ULL;
    };
    mix(containerd_address);
    mix(ns);
    mix(group);
    return fmt::format("{:016x}", h);
}

std::string shim_socket_path(std::string_view socket_dir, std::string_view key) {
    return fmt::format("{}/kestrel-{}.sock", socket_dir, key);
}

std::string pod_state_dir(std::string_view state_root, std::string_view key) {
    return fmt::format("{}/{}", state_root, key);
}

}  // namespace kestrel::shim
