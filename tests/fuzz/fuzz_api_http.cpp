// libFuzzer target for the API's HTTP framing: the bytes a client sends on the API socket go
// through the real cpp-httplib server, configured exactly as kestrel's (configure_http,
// vmm/api/api_http.hpp), over an in-memory stream: up to kMaxRequests requests of one
// keep-alive connection (request lines, headers, Content-Length and chunked bodies, Expect:
// 100-continue, the body bound), then parse_api_request and a stand-in controller.
// fuzz-api-request covers what comes after the framing in depth; this one the framing and
// kestrel's answers to what httplib refuses.
//
// Debian ships cpp-httplib as a prebuilt shared library, so its parser is not
// coverage-instrumented: libFuzzer steers by kestrel's side (handlers, the refusal texts),
// and the sanitizers check kestrel's code and every heap block httplib hands over.
//
// Checks, besides the sanitizers (and no exception may escape):
//  - every answer's status line is HTTP/1.1 with 100 (Continue), 200, 204 or 400: Firecracker's
//    codes, whatever httplib itself would have answered (404, 405, 413, 414 ...);
//  - every 400 with a body carries {"fault_message"} (HEAD answers have no body);
//  - every answer is whole: its head ends, its body is as long as its Content-Length.
#include <httplib.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

#include "tests/fuzz/fuzz_support.hpp"
#include "vmm/api/api_http.hpp"

using namespace kestrel;
using namespace kestrel::api;
using kestrel::fuzz::check;

namespace {

constexpr int kMaxRequests = 8;

// One connection's two directions: what the client sent (read front to back, then EOF) and
// what the server wrote.
class MemoryStream final : public httplib::Stream {
public:
    explicit MemoryStream(std::string_view in) : in_(in) {}
    bool is_readable() const override { return true; }  // EOF is a read of 0
    bool is_writable() const override { return true; }
    ssize_t read(char* p, size_t n) override {
        n = std::min(n, in_.size() - pos_);
        std::memcpy(p, in_.data() + pos_, n);
        pos_ += n;
        return static_cast<ssize_t>(n);
    }
    ssize_t write(const char* p, size_t n) override {
        out_.append(p, n);
        return static_cast<ssize_t>(n);
    }
    void get_remote_ip_and_port(std::string& ip, int& port) const override {
        ip.clear();
        port = 0;
    }
    void get_local_ip_and_port(std::string& ip, int& port) const override {
        ip.clear();
        port = 0;
    }
    socket_t socket() const override { return INVALID_SOCKET; }

    size_t consumed() const { return pos_; }
    bool at_end() const { return pos_ == in_.size(); }
    const std::string& out() const { return out_; }

private:
    std::string_view in_;
    size_t pos_ = 0;
    std::string out_;
};

// process_request is httplib's one-request step (protected): serve one request of a
// connection, as its socket loop does.
class FuzzServer final : public httplib::Server {
public:
    bool serve_one(httplib::Stream& s, bool& closed) {
        return process_request(s, /*close_connection=*/false, closed, [](httplib::Request&) {});
    }
};

ApiResponse controller(ApiRequest r) {
    (void)r;
    return ApiResponse{200, R"({"state":"Not started"})"};
}

// The answers written on one connection, front to back: a status line and head each (a 100
// Continue before some), then the body.
void check_answers(std::string_view out) {
    size_t at = 0;
    while (at < out.size()) {
        check(out.substr(at).starts_with("HTTP/1.1 "));
        check(out.size() >= at + 12);
        const std::string_view code = out.substr(at + 9, 3);
        check(code == "100" || code == "200" || code == "204" || code == "400");
        const size_t head_end = out.find("\r\n\r\n", at);
        check(head_end != std::string_view::npos);
        const std::string_view head = out.substr(at, head_end - at);
        size_t body_len = 0;
        if (auto cl = head.find("Content-Length: "); cl != std::string_view::npos)
            body_len = std::strtoull(std::string(head.substr(cl + 16, 20)).c_str(), nullptr, 10);
        size_t next = head_end + 4;
        // A HEAD answer carries the length of a body it does not send: the next answer (or
        // the end) starts where a status line does.
        const std::string_view body = out.substr(next, std::min(body_len, out.size() - next));
        if (body.starts_with("HTTP/1.1 ") || body.empty()) {
            at = next;
            continue;
        }
        check(body.size() == body_len);
        if (code == "400") check(body.find("\"fault_message\"") != std::string_view::npos);
        at = next + body_len;
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    static FuzzServer* svr = [] {
        kestrel::fuzz::quiet_logs();
        auto* s = new FuzzServer;
        configure_http(*s, controller);
        return s;
    }();
    MemoryStream strm(std::string_view(reinterpret_cast<const char*>(data), size));
    for (int i = 0; i < kMaxRequests && !strm.at_end(); ++i) {
        const size_t before = strm.consumed();
        bool closed = false;
        const bool ok = svr->serve_one(strm, closed);
        if (!ok || closed || strm.consumed() == before) break;
    }
    check_answers(strm.out());
    return 0;
}
