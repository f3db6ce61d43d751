#include "migration/migration_stream.hpp"

#include <sys/socket.h>

#include <cstring>
#include <thread>

#include <doctest/doctest.h>

using namespace kestrel;
using namespace kestrel::migration;

TEST_CASE("migration stream: endpoints") {
    auto u = parse_endpoint("unix:/tmp/m.sock");
    REQUIRE(u);
    CHECK(u->kind == Endpoint::Kind::Unix);
    CHECK(u->path == "/tmp/m.sock");
    auto t = parse_endpoint("tcp:10.0.0.2:7000");
    REQUIRE(t);
    CHECK(t->kind == Endpoint::Kind::Tcp);
    CHECK(t->host == "10.0.0.2");
    CHECK(t->port == 7000);
    auto v6 = parse_endpoint("tcp:[::1]:7000");
    REQUIRE(v6);
    CHECK(v6->host == "::1");
    for (const char* bad : {"ftp:x", "unix:", "tcp:host", "tcp::7000", "tcp:h:0", "tcp:h:65536", "tcp:h:7x",
                            "unix:/a/very/long/path/that/does/not/fit/in/sun_path/because/it/is/longer/than/"
                            "one/hundred/and/eight/bytes/in/all/xxxxxxxxxx"}) {
        CAPTURE(bad);
        CHECK_FALSE(parse_endpoint(bad));
    }
}

namespace {

struct Pair {
    int fds[2] = {-1, -1};
    Pair() { REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM, 0, fds) == 0); }
    ~Pair() {
        ::close(fds[0]);
        ::close(fds[1]);
    }
};

std::string refusal(std::span<const uint8_t> bytes, int steps) {
    Pair p;
    REQUIRE(write_all(p.fds[0], bytes));
    ::shutdown(p.fds[0], SHUT_WR);
    StreamReader r(p.fds[1]);
    auto h = r.header();
    if (!h) return h.error().message;
    for (int i = 0; i < steps; ++i) {
        auto t = r.next();
        if (!t) return t.error().message;
        if (*t == MessageType::Config) {
            auto c = r.config();
            if (!c) return c.error().message;
        } else if (*t == MessageType::Pages || *t == MessageType::Zero) {
            auto run = r.run();
            if (!run) return run.error().message;
        } else if (*t == MessageType::State) {
            auto s = r.state();
            if (!s) return s.error().message;
        }
    }
    return "";
}

std::vector<uint8_t> header_then(std::initializer_list<uint8_t> rest) {
    std::vector<uint8_t> b = {'K', 'E', 'S', 'T', 'R', 'L', 'M', 'G', 1, 0, 0, 0};
    for (uint8_t x : rest) b.push_back(x);  // (insert of the list trips a GCC 12 -Warray-bounds false positive)
    return b;
}

}  // namespace

TEST_CASE("migration stream: what the writer sends the reader reads back") {
    Pair p;
    std::vector<uint8_t> page(2 * kPageSize);
    for (size_t i = 0; i < page.size(); ++i) page[i] = static_cast<uint8_t>(i * 13);
    std::thread writer([&] {
        StreamWriter w(p.fds[0]);
        REQUIRE(w.header());
        REQUIRE(w.config(R"({"machine-config":{}})"));
        REQUIRE(w.pages(0x200000, page));
        REQUIRE(w.zero(0x400000, 3));
        REQUIRE(w.state(std::vector<uint8_t>{1, 2, 3}));
        REQUIRE(w.done());
    });
    StreamReader r(p.fds[1]);
    REQUIRE(r.header());
    CHECK(*r.next() == MessageType::Config);
    CHECK(*r.config() == R"({"machine-config":{}})");
    CHECK(*r.next() == MessageType::Pages);
    auto run = r.run();
    REQUIRE(run);
    CHECK(run->gpa == 0x200000);
    CHECK(run->count == 2);
    std::vector<uint8_t> back(2 * kPageSize);
    REQUIRE(r.page_data(back));
    REQUIRE(r.end());
    CHECK(back == page);
    CHECK(*r.next() == MessageType::Zero);
    auto z = r.run();
    REQUIRE(z);
    CHECK(z->gpa == 0x400000);
    CHECK(z->count == 3);
    REQUIRE(r.end());
    CHECK(*r.next() == MessageType::State);
    CHECK(*r.state() == std::vector<uint8_t>{1, 2, 3});
    CHECK(*r.next() == MessageType::Done);
    REQUIRE(r.end());
    writer.join();
}

TEST_CASE("migration stream: a message changed on the way is refused by its CRC") {
    std::vector<uint8_t> bytes;
    {
        Pair p;
        std::thread writer([&] {
            StreamWriter w(p.fds[0]);
            REQUIRE(w.header());
            REQUIRE(w.pages(0x1000, std::vector<uint8_t>(kPageSize, 0x5a)));
            REQUIRE(w.flush());
            ::shutdown(p.fds[0], SHUT_WR);
        });
        uint8_t buf[8192];
        ssize_t n;
        while ((n = ::read(p.fds[1], buf, sizeof buf)) > 0) bytes.insert(bytes.end(), buf, buf + n);
        writer.join();
    }
    REQUIRE(bytes.size() == 12 + 1 + 8 + 4 + kPageSize + 4);
    bytes[12 + 1 + 8 + 4 + 100] ^= 0x04;  // one bit of the page data
    Pair p;
    REQUIRE(write_all(p.fds[0], bytes));
    ::shutdown(p.fds[0], SHUT_WR);
    StreamReader r(p.fds[1]);
    REQUIRE(r.header());
    REQUIRE(*r.next() == MessageType::Pages);
    auto run = r.run();
    REQUIRE(run);
    std::vector<uint8_t> page(kPageSize);
    REQUIRE(r.page_data(page));
    auto e = r.end();
    REQUIRE_FALSE(e);
    CHECK(e.error().message.find("PAGES ending at byte") != std::string::npos);
    CHECK(e.error().message.find("CRC-32C") != std::string::npos);
}

TEST_CASE("migration stream: answers") {
    Pair p;
    REQUIRE(send_answer(p.fds[0], {}));
    REQUIRE(send_answer(p.fds[0], fail("no room for 4096 MiB")));
    CHECK(read_answer(p.fds[1], "the configuration"));
    auto r = read_answer(p.fds[1], "the VM");
    REQUIRE_FALSE(r);
    CHECK(r.error().message == "the destination refused the VM: no room for 4096 MiB");
}

TEST_CASE("migration stream: hostile headers, types and lengths are refused before anything is sized") {
    const std::vector<uint8_t> not_kestrel = {'Q', 'E', 'V', 'M', 0, 0, 0, 3, 1, 0, 0, 0};
    CHECK(refusal(not_kestrel, 0).find("no KESTRLMG header") != std::string::npos);
    CHECK(refusal(std::vector<uint8_t>{'K', 'E', 'S', 'T', 'R', 'L', 'M', 'G', 2, 0, 0, 0}, 0).find("version 2") !=
          std::string::npos);
    CHECK(refusal(header_then({9}), 1).find("message type 9") != std::string::npos);
    CHECK(refusal(header_then({0}), 1).find("message type 0") != std::string::npos);
    // CONFIG of 4 GiB - 1, PAGES misaligned / too many / none, STATE of 2^63.
    CHECK(refusal(header_then({1, 0xff, 0xff, 0xff, 0xff}), 1).find("over") != std::string::npos);
    CHECK(refusal(header_then({2, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0}), 1).find("not page aligned") != std::string::npos);
    CHECK(refusal(header_then({5, 0, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}), 1).find("ZERO at") != std::string::npos);
    CHECK(refusal(header_then({2, 0, 0x10, 0, 0, 0, 0, 0, 0, 0x01, 0x01, 0, 0}), 1).find("1..256") != std::string::npos);
    CHECK(refusal(header_then({2, 0, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}), 1).find("1..256") != std::string::npos);
    CHECK(refusal(header_then({3, 0, 0, 0, 0, 0, 0, 0, 0x80}), 1).find("over") != std::string::npos);
    // A stream that ends in the middle says so.
    CHECK(refusal(header_then({1, 10, 0, 0, 0, '{'}), 1).find("it ended in CONFIG") != std::string::npos);
}
