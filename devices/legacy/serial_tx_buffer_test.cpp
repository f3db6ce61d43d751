#include "devices/legacy/serial_tx_buffer.hpp"

#include <doctest/doctest.h>

#include <string>
#include <thread>
#include <vector>

using namespace kestrel;

namespace {

std::span<const uint8_t> bytes(const std::string& s) {
    return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

std::string take_all(SerialTxBuffer& b) {
    std::string s;
    uint8_t buf[7];  // small and odd: many peeks, across the ring's end
    while (size_t n = b.peek(buf)) {
        s.append(reinterpret_cast<const char*>(buf), n);
        b.pop(n);
    }
    return s;
}

}  // namespace

TEST_CASE("serial tx buffer: bytes beyond capacity are dropped and counted, the rest kept in order") {
    SerialTxBuffer b(10);
    CHECK(b.push(bytes("abcdef")) == 6);
    CHECK(b.push(bytes("ghijklmn")) == 4);  // "klmn" does not fit
    CHECK(b.dropped() == 4);
    CHECK(b.size() == 10);
    CHECK(b.push(bytes("z")) == 0);
    CHECK(b.dropped() == 5);
    CHECK(take_all(b) == "abcdefghij");
    CHECK(b.size() == 0);
}

TEST_CASE("serial tx buffer: order survives wrapping around the ring") {
    SerialTxBuffer b(8);
    std::string sent, got;
    uint8_t buf[3];
    for (int round = 0; round < 50; ++round) {
        std::string chunk(static_cast<size_t>(1 + round % 5), static_cast<char>('a' + round % 26));
        REQUIRE(b.push(bytes(chunk)) == chunk.size());
        sent += chunk;
        // Take a little less than was added for a while, then catch up: head and tail wrap.
        size_t n = b.peek(std::span(buf, round % 7 == 6 ? 3 : 2));
        got.append(reinterpret_cast<const char*>(buf), n);
        b.pop(n);
        if (b.size() > 4) {
            got += take_all(b);
        }
    }
    got += take_all(b);
    CHECK(got == sent);
    CHECK(b.dropped() == 0);
}

TEST_CASE("serial tx buffer: one wake-up per batch, re-armed when the consumer finds it empty") {
    int wakes = 0;
    SerialTxBuffer b(16, [&] { ++wakes; });
    b.push(bytes("a"));
    b.push(bytes("b"));
    CHECK(wakes == 1);  // the consumer has not run yet: no second wake-up
    uint8_t buf[16];
    CHECK(b.peek(buf) == 2);
    b.pop(2);
    b.push(bytes("c"));
    CHECK(wakes == 1);  // emptied but not yet seen empty: the consumer is still draining
    CHECK(b.peek(buf) == 1);
    b.pop(1);
    CHECK(b.peek(buf) == 0);  // seen empty: armed
    b.push(bytes("d"));
    CHECK(wakes == 2);
    b.push(bytes(std::string(20, 'x')));  // partly dropped: no extra wake-up either
    CHECK(wakes == 2);
}

TEST_CASE("serial tx buffer: write errors and close() count drops; nothing moves after close") {
    int wakes = 0;
    SerialTxBuffer b(16, [&] { ++wakes; });
    b.push(bytes("0123456789"));
    b.drop(4, "test: write failed");
    CHECK(b.dropped() == 4);
    CHECK(b.size() == 6);
    CHECK(b.close() == 6);
    CHECK(b.dropped() == 10);
    CHECK(b.push(bytes("xy")) == 0);
    CHECK(b.dropped() == 12);
    CHECK(wakes == 1);  // none after close: its consumer may be gone
    b.pop(3);           // a writer that finishes after close changes nothing
    b.drop(3, "late");
    CHECK(b.dropped() == 12);
    uint8_t buf[4];
    CHECK(b.peek(buf) == 0);
    CHECK(b.close() == 0);
}

TEST_CASE("serial tx buffer: concurrent producer and consumer lose nothing that fit") {
    SerialTxBuffer b(64);
    constexpr size_t kTotal = 20000;
    std::thread producer([&] {
        for (size_t i = 0; i < kTotal;) {
            const uint8_t v = static_cast<uint8_t>(i % 251);
            if (b.push(std::span(&v, 1)) == 1)
                ++i;
            else
                std::this_thread::yield();  // retried: a dropped byte does not count as sent
        }
    });
    size_t got = 0;
    bool in_order = true;
    uint8_t buf[32];
    while (got < kTotal) {
        size_t n = b.peek(buf);
        for (size_t i = 0; i < n; ++i) in_order &= buf[i] == static_cast<uint8_t>((got + i) % 251);
        b.pop(n);
        got += n;
    }
    producer.join();
    CHECK(in_order);
    CHECK(got == kTotal);
}
