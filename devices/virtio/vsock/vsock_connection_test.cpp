#include "devices/virtio/vsock/vsock_connection.hpp"

#include <doctest/doctest.h>

using namespace kestrel::vsock;

TEST_CASE("vsock: CONNECT line parsing (Firecracker host protocol)") {
    CHECK(parse_connect_line("CONNECT 1234") == 1234u);
    CHECK(parse_connect_line("CONNECT 1234\r") == 1234u);
    CHECK(parse_connect_line("CONNECT 0") == 0u);
    CHECK(parse_connect_line("CONNECT 4294967295") == 4294967295u);
    CHECK_FALSE(parse_connect_line("CONNECT 4294967296"));
    CHECK_FALSE(parse_connect_line("CONNECT "));
    CHECK_FALSE(parse_connect_line("CONNECT"));
    CHECK_FALSE(parse_connect_line("connect 12"));
    CHECK_FALSE(parse_connect_line("CONNECT -1"));
    CHECK_FALSE(parse_connect_line("CONNECT +1"));
    CHECK_FALSE(parse_connect_line("CONNECT 12 "));
    CHECK_FALSE(parse_connect_line("CONNECT  12"));
    CHECK_FALSE(parse_connect_line("CONNECT 12x"));
    CHECK_FALSE(parse_connect_line("CONNECT 00000000012"));
    CHECK(ok_line(1073741824) == "OK 1073741824\n");
}

TEST_CASE("vsock: peer credit (§5.10.6.3) with wrapping counters and lying peers") {
    Connection c;
    c.peer_buf_alloc = 1000;
    c.peer_fwd_cnt = 0;
    c.tx_cnt = 0;
    CHECK(c.peer_free() == 1000);
    c.tx_cnt = 600;
    CHECK(c.peer_free() == 400);
    c.peer_fwd_cnt = 500;
    CHECK(c.peer_free() == 900);
    // Counters wrap at 2^32.
    c.tx_cnt = 100;
    c.peer_fwd_cnt = 0xffffff00u;  // 356 bytes in flight
    CHECK(c.peer_free() == 644);
    // fwd_cnt ahead of what we sent: no credit, not 4 GiB of it.
    c.tx_cnt = 10;
    c.peer_fwd_cnt = 20;
    CHECK(c.peer_free() == 0);
    // buf_alloc shrunk below what is in flight.
    c.peer_fwd_cnt = 0;
    c.peer_buf_alloc = 5;
    CHECK(c.peer_free() == 0);
}

TEST_CASE("vsock: our credit and the guest's view of it") {
    Connection c;
    c.buf_alloc = 100;
    CHECK(c.fits_our_credit(100));
    CHECK_FALSE(c.fits_our_credit(101));
    c.rx_cnt = 60;
    c.fwd_cnt = 10;  // 50 held
    CHECK(c.fits_our_credit(50));
    CHECK_FALSE(c.fits_our_credit(51));
    c.last_sent_fwd_cnt = 0;
    CHECK(c.guest_view_of_free() == 40);
    c.last_sent_fwd_cnt = 10;
    CHECK(c.guest_view_of_free() == 50);
    c.rx_cnt = 0xfffffff0u + 60;  // wrapped
    c.fwd_cnt = 0xfffffff0u + 10;
    CHECK(c.fits_our_credit(50));
    CHECK_FALSE(c.fits_our_credit(51));
}

TEST_CASE("vsock: the to-host buffer keeps order across compaction") {
    Connection c;
    std::vector<uint8_t> a(100), b(30);
    for (size_t i = 0; i < a.size(); ++i) a[i] = static_cast<uint8_t>(i);
    for (size_t i = 0; i < b.size(); ++i) b[i] = static_cast<uint8_t>(200 + i);
    c.append_to_host(a.data(), a.size());
    c.consume_to_host(70);
    CHECK(c.buffered_to_host() == 30);
    c.append_to_host(b.data(), b.size());  // compacts the consumed 70
    CHECK(c.to_host_head == 0);
    REQUIRE(c.buffered_to_host() == 60);
    CHECK(c.to_host[0] == 70);
    CHECK(c.to_host[29] == 99);
    CHECK(c.to_host[30] == 200);
    c.consume_to_host(60);
    CHECK(c.buffered_to_host() == 0);
    CHECK(c.to_host.empty());
}
