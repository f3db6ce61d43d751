#include "cni-shim/shim/api_client.hpp"

#include <poll.h>
#include <unistd.h>

#include <charconv>
#include <fcntl.h>

#include "cni-shim/ttrpc/unix_socket.hpp"

namespace kestrel::shim {

namespace {
constexpr std::size_t kMaxResponse = 1 << 20;

bool iequals(std::string_view a, std::string_view b) {
    if (a.size() != b.size()) return false;
    for (std::size_t i = 0; i < a.size(); ++i) {
        char x = a[i], y = b[i];
        if (x >= 'A' && x <= 'Z') x = static_cast<char>(x - 'A' + 'a');
        if (y >= 'A' && y <= 'Z') y = static_cast<char>(y - 'A' + 'a');
        if (x != y) return false;
    }
    return true;
}

// nullopt-like: -1 while the response is not complete yet.
Result<long> complete_length(std::string_view raw) {
    auto end = raw.find("\r\n\r\n");
    if (end == std::string_view::npos) {
        if (raw.size() > 64 * 1024) return fail("HTTP response headers longer than 64 KiB");
        return -1;
    }
    std::string_view headers = raw.substr(0, end);
    std::size_t content_length = 0;
    std::size_t pos = headers.find("\r\n");
    while (pos != std::string_view::npos) {
        std::size_t next = headers.find("\r\n", pos + 2);
        std::string_view line = headers.substr(pos + 2, next == std::string_view::npos ? std::string_view::npos : next - pos - 2);
        auto colon = line.find(':');
        if (colon != std::string_view::npos && iequals(line.substr(0, colon), "content-length")) {
            std::string_view v = line.substr(colon + 1);
            while (!v.empty() && v.front() == ' ') v.remove_prefix(1);
            while (!v.empty() && v.back() == ' ') v.remove_suffix(1);
            auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), content_length);
            if (ec != std::errc() || p != v.data() + v.size()) return fail("HTTP response: bad Content-Length '{}'", v);
            if (content_length > kMaxResponse) return fail("HTTP response body of {} bytes, more than 1 MiB", content_length);
        }
        pos = next;
    }
    std::size_t total = end + 4 + content_length;
    return raw.size() >= total ? static_cast<long>(total) : -1;
}
}  // namespace

Result<HttpResponse> parse_http_response(std::string_view raw) {
    long total = TRY(complete_length(raw));
    if (total < 0) return fail("HTTP response incomplete ({} bytes)", raw.size());
    if (!raw.starts_with("HTTP/1.") || raw.size() < 12 || raw[8] != ' ') return fail("not an HTTP/1.x response");
    int status = 0;
    auto [p, ec] = std::from_chars(raw.data() + 9, raw.data() + 12, status);
    if (ec != std::errc() || p != raw.data() + 12 || status < 100 || status > 599) return fail("HTTP response: bad status line");
    auto end = raw.find("\r\n\r\n");
    return HttpResponse{status, std::string(raw.substr(end + 4, static_cast<std::size_t>(total) - end - 4))};
}

Result<HttpResponse> api_request(const std::string& socket_path, std::string_view method, std::string_view target,
                                 std::string_view json_body, std::chrono::milliseconds timeout) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    UniqueFd fd = TRY(ttrpc::connect_unix(socket_path, timeout));
    std::string req = fmt::format("{} {} HTTP/1.1\r\nHost: localhost\r\nAccept: application/json\r\n", method, target);
    if (!json_body.empty()) {
        req += fmt::format("Content-Type: application/json\r\nContent-Length: {}\r\n", json_body.size());
    }
    req += "Connection: close\r\n\r\n";
    req += json_body;
    TRY(ttrpc::write_all(fd.get(), req));
    std::string raw;
    char buf[4096];
    for (;;) {
        long total = TRY(complete_length(raw));
        if (total >= 0) break;
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
        if (left.count() <= 0) return fail("{} {}: no answer from kestrel within {} ms", method, target, timeout.count());
        pollfd p{fd.get(), POLLIN, 0};
        int r = ::poll(&p, 1, static_cast<int>(left.count()));
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) return fail_errno("poll");
        if (r == 0) continue;
        ssize_t n = ::read(fd.get(), buf, sizeof buf);
        if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
        if (n < 0) return fail_errno("read {}", socket_path);
        if (n == 0) return fail("{} {}: kestrel closed the connection after {} bytes", method, target, raw.size());
        raw.append(buf, static_cast<std::size_t>(n));
    }
    return parse_http_response(raw);
}

Result<void> api_call(const std::string& socket_path, std::string_view method, std::string_view target,
                      std::string_view json_body, std::chrono::milliseconds timeout) {
    HttpResponse r = TRY(api_request(socket_path, method, target, json_body, timeout));
    if (r.status / 100 != 2) return fail("kestrel API {} {}: {} {}", method, target, r.status, r.body);
    return {};
}

}  // namespace kestrel::shim
