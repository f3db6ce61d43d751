#include "cni-shim/shim/api_client.hpp"

#include <sys/socket.h>
#include <unistd.h>

#include <filesystem>
#include <thread>

#include <doctest/doctest.h>

#include "cni-shim/ttrpc/unix_socket.hpp"

using namespace kestrel::shim;

TEST_CASE("parse_http_response reads status and body by Content-Length") {
    auto r = parse_http_response("HTTP/1.1 204 No Content\r\nServer: kestrel\r\n\r\n");
    REQUIRE(r);
    CHECK(r->status == 204);
    CHECK(r->body.empty());
    r = parse_http_response("HTTP/1.1 400 Bad Request\r\ncontent-length: 21\r\n\r\n{\"fault_message\":\"x\"}");
    REQUIRE(r);
    CHECK(r->status == 400);
    CHECK(r->body == "{\"fault_message\":\"x\"}");
    CHECK_FALSE(parse_http_response("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort"));
    CHECK_FALSE(parse_http_response("HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n"));
    CHECK_FALSE(parse_http_response("HTTP/1.1 200 OK\r\nContent-Length: 99999999\r\n\r\n"));
    CHECK_FALSE(parse_http_response("SSH-2.0 hello\r\n\r\n"));
    CHECK_FALSE(parse_http_response("HTTP/1.1 2x0 OK\r\n\r\n"));
}

TEST_CASE("api_call sends one HTTP/1.1 request over a unix socket and judges the status") {
    auto dir = std::filesystem::temp_directory_path() / ("kestrel-api-test-" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir);
    std::string path = (dir / "api.sock").string();
    auto listener = kestrel::ttrpc::listen_unix(path);
    REQUIRE(listener);
    std::string seen;
    std::thread server([&] {
        for (int i = 0; i < 2; ++i) {
            int c = ::accept(listener->get(), nullptr, nullptr);
            char buf[4096];
            std::string req;
            while (req.find("\r\n\r\n") == std::string::npos || req.size() < req.find("\r\n\r\n") + 4 + 18) {
                ssize_t n = ::read(c, buf, sizeof buf);
                if (n <= 0) break;
                req.append(buf, static_cast<std::size_t>(n));
            }
            if (i == 0) {
                seen = req;
                (void)kestrel::ttrpc::write_all(c, "HTTP/1.1 204 No Content\r\n\r\n");
            } else {
                (void)kestrel::ttrpc::write_all(c, "HTTP/1.1 400 Bad Request\r\nContent-Length: 6\r\n\r\nno vm!");
            }
            ::close(c);
        }
    });
    auto ok = api_call(path, "PATCH", "/vm", R"({"state":"Paused"})");
    CHECK(ok);
    auto bad = api_call(path, "PATCH", "/vm", R"({"state":"Paused"})");
    server.join();
    REQUIRE_FALSE(bad);
    CHECK(bad.error().message.find("400 no vm!") != std::string::npos);
    CHECK(seen.starts_with("PATCH /vm HTTP/1.1\r\n"));
    CHECK(seen.find("Content-Length: 18\r\n") != std::string::npos);
    CHECK(seen.ends_with("\r\n\r\n{\"state\":\"Paused\"}"));
    std::filesystem::remove_all(dir);
}
