#include "devices/virtio/vsock/vsock_connection.hpp"

#include <charconv>

#include <fmt/format.h>

namespace kestrel::vsock {

std::optional<uint32_t> parse_connect_line(std::string_view line) {
    constexpr std::string_view kVerb = "CONNECT ";
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (!line.starts_with(kVerb)) return std::nullopt;
    line.remove_prefix(kVerb.size());
    if (line.empty() || line.size() > 10) return std::nullopt;
    uint32_t port = 0;
    auto [end, ec] = std::from_chars(line.data(), line.data() + line.size(), port, 10);
    if (ec != std::errc() || end != line.data() + line.size()) return std::nullopt;
    return port;
}

std::string ok_line(uint32_t host_port) { return fmt::format("OK {}\n", host_port); }

void Connection::consume_to_host(size_t n) {
    to_host_head += n;
    if (to_host_head == to_host.size()) {
        to_host.clear();
        to_host_head = 0;
    }
}

void Connection::append_to_host(const uint8_t* data, size_t n) {
    // Compact only when the dead prefix is large, so bytes move O(1) times amortised.
    if (to_host_head > 0 && to_host_head >= to_host.size() / 2) {
        to_host.erase(to_host.begin(), to_host.begin() + static_cast<ptrdiff_t>(to_host_head));
        to_host_head = 0;
    }
    to_host.insert(to_host.end(), data, data + n);
}

}  // namespace kestrel::vsock
