#include "cni-shim/shim/pod_net.hpp"

#include <spdlog/spdlog.h>

#include "cni-shim/net/guest_config.hpp"

namespace kestrel::shim {

using nlohmann::json;

Result<std::optional<std::string>> spec_netns_path(const json& config) {
    auto linux_it = config.find("linux");
    if (linux_it == config.end() || !linux_it->is_object()) return std::nullopt;
    auto ns_it = linux_it->find("namespaces");
    if (ns_it == linux_it->end() || ns_it->is_null()) return std::nullopt;
    if (!ns_it->is_array()) return bad_request("linux.namespaces: expected an array");
    std::optional<std::string> out;
    bool seen = false;
    for (size_t i = 0; i < ns_it->size(); ++i) {
        const json& n = (*ns_it)[i];
        if (!n.is_object()) return bad_request("linux.namespaces[{}]: expected an object", i);
        auto t = n.find("type");
        if (t == n.end() || !t->is_string() || t->get_ref<const std::string&>() != "network") continue;
        if (seen) return bad_request("linux.namespaces[{}]: a second network namespace", i);
        seen = true;
        auto p = n.find("path");
        if (p == n.end() || p->is_null()) continue;
        if (!p->is_string()) return bad_request("linux.namespaces[{}].path: expected a string", i);
        const std::string& s = p->get_ref<const std::string&>();
        if (s.empty()) continue;
        if (s.front() != '/' || s.size() > 4095 || s.find('\0') != std::string::npos)
            return bad_request("linux.namespaces[{}].path: not an absolute path of at most 4095 bytes", i);
        for (std::size_t at = 0; at <= s.size();) {
            std::size_t end = std::min(s.find('/', at), s.size());
            std::string_view part(s.data() + at, end - at);
            if (part == "." || part == "..") return bad_request("linux.namespaces[{}].path: '.' or '..' component", i);
            at = end + 1;
        }
        out = s;
    }
    return out;
}

Result<std::unique_ptr<PodNet>> PodNet::attach(const std::string& netns) {
    auto n = cninet::attach_pod_network(netns);
    if (!n) return fail("pod network namespace {}: {}", netns, n.error());
    for (const auto& itf : n->interfaces)
        spdlog::info("pod network: {} {} (MTU {}) -> {}", itf.name, itf.mac_string(), itf.mtu, itf.tap_name);
    return std::unique_ptr<PodNet>(new PodNet(std::move(*n)));
}

PodNet::~PodNet() {
    std::string ns = net_.netns_path;
    net_.interfaces.clear();  // our fds: with kestrel's gone too, the taps go with them
    detach_netns(ns);
}

std::vector<PodVmNet> PodNet::vm_nets() const {
    std::vector<PodVmNet> out;
    for (std::size_t i = 0; i < net_.interfaces.size(); ++i)
        out.push_back({net_.interfaces[i].tap_fd.get(), net_.interfaces[i].mac_string(), fmt::format("net{}", i)});
    return out;
}

json PodNet::agent_request() const {
    json j = json::parse(cninet::guest_network_json(net_));
    j["op"] = "network";
    return j;
}

void detach_netns(const std::string& netns) {
    if (auto r = cninet::detach_pod_network(netns); !r) spdlog::warn("pod network {}: {}", netns, r.error());
    else spdlog::info("pod network {}: taps and filters removed", netns);
}

}  // namespace kestrel::shim
