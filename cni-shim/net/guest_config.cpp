#include "cni-shim/net/guest_config.hpp"

#include <arpa/inet.h>

#include <nlohmann/json.hpp>

namespace kestrel::cninet {

Result<std::string> kernel_ip_param(const PodInterface& itf, const std::string& guest_device) {
    const IpAddress* v4 = nullptr;
    for (const auto& a : itf.addresses)
        if (a.family == AF_INET) {
            v4 = &a;
            break;
        }
    if (!v4) return fail("'{}' has no IPv4 address for the kernel's ip= parameter", itf.name);
    if (v4->prefix_len > 32) return fail("'{}': IPv4 prefix /{}", itf.name, v4->prefix_len);
    uint32_t mask = v4->prefix_len == 0 ? 0 : ~uint32_t{0} << (32 - v4->prefix_len);
    in_addr m{htonl(mask)};
    char mask_text[INET_ADDRSTRLEN] = {};
    ::inet_ntop(AF_INET, &m, mask_text, sizeof mask_text);
    return fmt::format("ip={}::{}:{}::{}:off", v4->address, itf.default_gateway(AF_INET), mask_text, guest_device);
}

std::string guest_network_json(const PodNetwork& net) {
    auto j = nlohmann::json::object();
    j["interfaces"] = nlohmann::json::array();
    for (const auto& itf : net.interfaces) {
        nlohmann::json i = {{"name", itf.name}, {"mac", itf.mac_string()}, {"mtu", itf.mtu}};
        i["addresses"] = nlohmann::json::array();
        for (const auto& a : itf.addresses) i["addresses"].push_back(fmt::format("{}/{}", a.address, a.prefix_len));
        i["routes"] = nlohmann::json::array();
        for (const auto& r : itf.routes) {
            std::string dst = r.destination.empty() ? (r.family == AF_INET6 ? "::" : "0.0.0.0") : r.destination;
            nlohmann::json route = {{"dst", fmt::format("{}/{}", dst, r.prefix_len)}};
            if (!r.gateway.empty()) route["via"] = r.gateway;
            i["routes"].push_back(std::move(route));
        }
        j["interfaces"].push_back(std::move(i));
    }
    return j.dump();
}

}  // namespace kestrel::cninet
