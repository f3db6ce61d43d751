#include "migration/state_stream.hpp"

#include <doctest/doctest.h>

#include <cstring>
#include <string>
#include <vector>

#include "migration/crc64.hpp"

using namespace kestrel;
using namespace kestrel::migration;

namespace {

std::span<const uint8_t> as_bytes(std::string_view s) {
    return std::span(reinterpret_cast<const uint8_t*>(s.data()), s.size());
}

bool contains(const std::string& haystack, std::string_view needle) {
    return haystack.find(needle) != std::string::npos;
}

// The message of a refused parse (and that it was refused as a bad request).
std::string parse_error(std::span<const uint8_t> file) {
    auto r = StateFile::parse(file);
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error().kind == ErrorKind::BadRequest);
    return r.error().message;
}

std::vector<uint8_t> small_file() {
    StateWriter w("0.1.0", "AuthenticAMD family 25 model 1");
    auto& uart = w.section("uart/com1", 1);
    uart.put_u8(0x03);   // lcr
    uart.put_u16(0x0c);  // divisor
    auto& vcpu = w.section("vcpu/0", 2);
    vcpu.put_u64(0xfff0);
    vcpu.put_bool(true);
    auto r = std::move(w).finish();
    REQUIRE(r.has_value());
    return *r;
}

// A file built field by field (to say what StateWriter refuses to write), checksummed.
struct RawFile {
    Encoder e;
    RawFile& header(uint32_t version = 1, std::string_view kv = "0.1.0", std::string_view cpu = "cpu") {
        e.put_bytes(as_bytes("KESTRLST"));
        e.put_u32(version);
        e.put_string(kv);
        e.put_string(cpu);
        return *this;
    }
    RawFile& section(std::string_view id, uint32_t version, std::string_view payload) {
        e.put_string(id);
        e.put_u32(version);
        e.put_u64(payload.size());
        e.put_bytes(as_bytes(payload));
        return *this;
    }
    std::vector<uint8_t> done() const {
        std::vector<uint8_t> out = e.bytes();
        uint64_t crc = crc64_xz(out);
        for (int i = 0; i < 8; ++i) out.push_back(static_cast<uint8_t>(crc >> (8 * i)));
        return out;
    }
};

void fix_crc(std::vector<uint8_t>& f) {
    REQUIRE(f.size() >= 8);
    uint64_t crc = crc64_xz(std::span(f).first(f.size() - 8));
    for (size_t i = 0; i < 8; ++i) f[f.size() - 8 + i] = static_cast<uint8_t>(crc >> (8 * i));
}

}  // namespace

TEST_CASE("state stream: CRC-64/XZ check value, and continued in pieces") {
    CHECK(crc64_xz(as_bytes("123456789")) == 0x995DC9BBDF1939FAull);
    CHECK(crc64_xz({}) == 0);
    CHECK(crc64_xz(as_bytes("6789"), crc64_xz(as_bytes("12345"))) == 0x995DC9BBDF1939FAull);
}

TEST_CASE("state stream: several sections round trip, in order, with every field type") {
    StateWriter w("0.1.0-dev", "GenuineIntel family 6 model 143");
    auto& a = w.section("uart/com1", 1);
    auto& b = w.section("virtio-pci/00:03.0", 7);
    w.section("empty", 3);  // a component with nothing to save still says it was there
    // Written interleaved: earlier encoders stay valid while sections are added.
    a.put_u8(0xab);
    b.put_u32(0xdeadbeef);
    a.put_u16(0x1234);
    a.put_u64(0x0102030405060708ull);
    a.put_i64(-5);
    a.put_bool(false);
    a.put_string("ttyS0");
    const uint8_t raw[3] = {9, 8, 7};
    a.put_bytes(raw);
    b.put_u32(2);
    auto bytes = std::move(w).finish();
    REQUIRE(bytes.has_value());
    CHECK(std::memcmp(bytes->data(), "KESTRLST", 8) == 0);

    auto f = StateFile::parse(*bytes);
    REQUIRE(f.has_value());
    CHECK(f->format_version == 1);
    CHECK(f->kestrel_version == "0.1.0-dev");
    CHECK(f->cpu_summary == "GenuineIntel family 6 model 143");
    REQUIRE(f->sections.size() == 3);
    CHECK(f->sections[0].id == "uart/com1");
    CHECK(f->sections[1].id == "virtio-pci/00:03.0");
    CHECK(f->sections[2].id == "empty");
    CHECK(f->find("nope") == nullptr);
    REQUIRE(f->find("virtio-pci/00:03.0") == &f->sections[1]);
    CHECK(f->find("empty")->version == 3);
    CHECK(f->find("empty")->payload.empty());

    Decoder d(*f->find("uart/com1"));
    CHECK(f->find("uart/com1")->version == 1);
    CHECK(d.u8("a").value() == 0xab);
    CHECK(d.u16("b").value() == 0x1234);
    CHECK(d.u64("c").value() == 0x0102030405060708ull);
    CHECK(d.i64("d").value() == -5);
    CHECK(d.boolean("e").value() == false);
    CHECK(d.string("f", 16).value() == "ttyS0");
    auto r = d.bytes("g", 3);
    REQUIRE(r.has_value());
    CHECK(std::vector<uint8_t>(r->begin(), r->end()) == std::vector<uint8_t>{9, 8, 7});
    CHECK(d.finish().has_value());

    Decoder d2(f->sections[1]);
    CHECK(d2.u32("magic").value() == 0xdeadbeef);
    CHECK(d2.u32_max("count", 2).value() == 2);
    CHECK(d2.finish().has_value());

    // Little-endian on the wire whatever the host: the uart's first fields, byte by byte.
    const auto& p = f->sections[0].payload;
    CHECK(p[0] == 0xab);
    CHECK(p[1] == 0x34);
    CHECK(p[2] == 0x12);
}

TEST_CASE("state stream: a file with no sections round trips") {
    auto bytes = StateWriter("v", "").finish();
    REQUIRE(bytes.has_value());
    auto f = StateFile::parse(*bytes);
    REQUIRE(f.has_value());
    CHECK(f->sections.empty());
    CHECK(f->cpu_summary.empty());
}

TEST_CASE("state stream: every single-bit flip of a small file is refused") {
    const auto good = small_file();
    REQUIRE(StateFile::parse(good).has_value());
    for (size_t pos = 0; pos < good.size(); ++pos) {
        for (int bit = 0; bit < 8; ++bit) {
            auto bad = good;
            bad[pos] ^= static_cast<uint8_t>(1u << bit);
            CAPTURE(pos);
            CAPTURE(bit);
            std::string msg = parse_error(bad);
            if (pos < 8) CHECK(contains(msg, "not a kestrel state file"));
            else CHECK(contains(msg, "state: checksum mismatch (stored 0x"));
        }
    }
}

TEST_CASE("state stream: every truncation is refused, even with its checksum recomputed") {
    const auto good = small_file();
    for (size_t len = 0; len < good.size(); ++len) {
        CAPTURE(len);
        std::vector<uint8_t> cut(good.begin(), good.begin() + static_cast<ptrdiff_t>(len));
        std::string msg = parse_error(cut);
        if (len >= 16) CHECK(contains(msg, "checksum mismatch"));
    }
    // The body cut short and a valid checksum put after it: the structure refuses it.
    const size_t body = good.size() - 8;
    for (size_t len = 8; len < body; ++len) {
        CAPTURE(len);
        std::vector<uint8_t> cut(good.begin(), good.begin() + static_cast<ptrdiff_t>(len));
        cut.resize(len + 8);
        fix_crc(cut);
        std::string msg = parse_error(cut);
        CHECK_FALSE(contains(msg, "checksum"));
        CHECK(contains(msg, "left"));
    }
}

TEST_CASE("state stream: the checksum message names both values; nothing may follow the trailer") {
    auto f = small_file();
    uint64_t stored = 0;
    std::memcpy(&stored, f.data() + f.size() - 8, 8);
    f.push_back(0);
    std::string msg = parse_error(f);
    CHECK(contains(msg, "state: checksum mismatch (stored 0x"));
    CHECK(contains(msg, ", computed 0x"));
    CHECK(contains(msg, "): the file is corrupt or truncated"));

    // Extra bytes between the last section and a valid checksum.
    RawFile raw;
    raw.header().e.put_u32(1);
    raw.section("a", 1, "x");
    raw.e.put_u8(0);
    CHECK(contains(parse_error(raw.done()), "state: 1 byte after the last of 1 sections, before the checksum"));
}

TEST_CASE("state stream: not a state file, or too short for one") {
    CHECK(contains(parse_error(as_bytes("hello, world, this is text")), "not a kestrel state file"));
    CHECK(contains(parse_error({}), "not a kestrel state file"));
    CHECK(contains(parse_error(as_bytes("KESTRLST1234")), "12 bytes is too short"));
}

TEST_CASE("state stream: duplicate ids are refused, by parse and by the writer") {
    RawFile raw;
    raw.header().e.put_u32(3);
    raw.section("uart/com1", 1, "a").section("vcpu/0", 1, "").section("uart/com1", 2, "bc");
    CHECK(parse_error(raw.done()) == "state: section 2 ('uart/com1'): duplicate id (also section 0)");

    StateWriter w("0.1.0", "cpu");
    w.section("vcpu/0", 1);
    w.section("vcpu/1", 1);
    w.section("vcpu/0", 1);
    auto r = std::move(w).finish();
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error().message == "state: writer: section 2 ('vcpu/0'): duplicate id (also section 0)");
}

TEST_CASE("state stream: a newer format_version is refused naming both versions; 0 is refused") {
    RawFile raw;
    raw.header(2).e.put_u32(0);
    std::string msg = parse_error(raw.done());
    CHECK(contains(msg, "state: header: format_version 2 is newer than this kestrel reads (1)"));

    RawFile zero;
    zero.header(0).e.put_u32(0);
    CHECK(contains(parse_error(zero.done()), "format_version 0 is not a version"));
}

TEST_CASE("state stream: bounds are refused naming the field and the bound") {
    SUBCASE("section_count over 4096") {
        RawFile raw;
        raw.header().e.put_u32(4097);
        CHECK(parse_error(raw.done()) == "state: header: section_count 4097 exceeds 4096");
    }
    SUBCASE("section_count more than the bytes left can hold") {
        RawFile raw;
        raw.header().e.put_u32(3);
        raw.section("a", 1, "");
        CHECK(parse_error(raw.done()) == "state: header: section_count 3 needs at least 51 bytes, 17 left");
    }
    SUBCASE("id length over 128") {
        RawFile raw;
        raw.header().e.put_u32(1);
        raw.section(std::string(129, 'x'), 1, "");
        CHECK(parse_error(raw.done()) == "state: section 0: id length 129 is not in 1..128");
    }
    SUBCASE("id length 0") {
        RawFile raw;
        raw.header().e.put_u32(1);
        raw.section("", 1, "0123456789abcdef");
        CHECK(parse_error(raw.done()) == "state: section 0: id length 0 is not in 1..128");
    }
    SUBCASE("id longer than what is left") {
        RawFile raw;
        raw.header().e.put_u32(1);
        raw.e.put_u32(100);
        raw.e.put_bytes(as_bytes("uart/com1 and thirteen more"));
        CHECK(parse_error(raw.done()) == "state: section 0: id length 100 exceeds the 27 bytes left");
    }
    SUBCASE("payload longer than what is left") {
        RawFile raw;
        raw.header().e.put_u32(4);
        raw.section("a", 1, "").section("b", 1, "").section("c", 1, "");
        raw.e.put_string("uart/com1");
        raw.e.put_u32(1);
        raw.e.put_u64(4096);
        raw.e.put_bytes(as_bytes("twelve bytes"));
        CHECK(parse_error(raw.done()) == "state: section 3 ('uart/com1'): payload_length 4096 exceeds the 12 bytes left");
    }
    SUBCASE("payload_length over the total bound") {
        RawFile raw;
        raw.header().e.put_u32(1);
        raw.e.put_string("a");
        raw.e.put_u32(1);
        raw.e.put_u64(~0ull);
        CHECK(contains(parse_error(raw.done()), "state: section 0 ('a'): payload_length 18446744073709551615 exceeds 268435456"));
    }
    SUBCASE("header string over 256") {
        RawFile raw;
        raw.header(1, std::string(9000, 'v')).e.put_u32(0);
        CHECK(parse_error(raw.done()) == "state: header: kestrel version length 9000 exceeds 256");
        RawFile cpu;
        cpu.header(1, "0.1.0", std::string(257, 'c')).e.put_u32(0);
        CHECK(parse_error(cpu.done()) == "state: header: cpu summary length 257 exceeds 256");
    }
    SUBCASE("header cut short") {
        RawFile raw;
        raw.e.put_bytes(as_bytes("KESTRLST"));
        raw.e.put_u32(1);
        raw.e.put_u16(5);
        CHECK(parse_error(raw.done()) == "state: header: kestrel version length needs 4 bytes, 2 left");
    }
}

TEST_CASE("state stream: non-printable ids and header strings are refused") {
    RawFile raw;
    raw.header().e.put_u32(1);
    raw.section("uart\ncom1", 1, "");
    CHECK(parse_error(raw.done()) == "state: section 0: id has a non-printable byte 0x0a at offset 4");

    RawFile hdr;
    hdr.header(1, "0.1\x1b[31m").e.put_u32(0);
    CHECK(parse_error(hdr.done()) == "state: header: kestrel version has a non-printable byte 0x1b at offset 3");
}

TEST_CASE("state stream: the writer refuses what parse would") {
    auto refused = [](StateWriter w) {
        auto r = std::move(w).finish();
        REQUIRE_FALSE(r.has_value());
        return r.error().message;
    };
    CHECK(refused(StateWriter(std::string(300, 'v'), "")) == "state: writer: kestrel version length 300 exceeds 256");
    CHECK(refused(StateWriter("v", "cpu\t1")) == "state: writer: cpu summary has a non-printable byte 0x09 at offset 3");
    StateWriter empty_id("v", "c");
    empty_id.section("", 1);
    CHECK(refused(std::move(empty_id)) == "state: writer: section 0: id length 0 is not in 1..128");
    StateWriter long_id("v", "c");
    long_id.section(std::string(129, 'i'), 1);
    CHECK(refused(std::move(long_id)) == "state: writer: section 0: id length 129 is not in 1..128");
    StateWriter many("v", "c");
    for (int i = 0; i <= 4096; ++i) many.section("s" + std::to_string(i), 1);
    CHECK(refused(std::move(many)) == "state: writer: 4097 sections exceed 4096");
}

TEST_CASE("state stream: Decoder short reads, bounds, bools, strings and trailing bytes name the field") {
    Section s{"uart/com1", 1, {0x05, 0x02, 0x07, 0x00, 0x00, 0x00, 0x03, 0x00, 0x00, 0x00, 'a', 'b'}};
    Decoder d(s);
    auto b = d.boolean("dlab");
    REQUIRE_FALSE(b.has_value());
    CHECK(b.error().message == "state: section 'uart/com1' v1: field 'dlab': 5 is not a bool (0 or 1)");
    CHECK(d.remaining() == 12);  // a refused read consumes nothing
    CHECK(d.u8("ier").value() == 5);
    CHECK(d.u8("mcr").value() == 2);
    auto n = d.u32_max("fifo_count", 6);
    REQUIRE_FALSE(n.has_value());
    CHECK(n.error().message == "state: section 'uart/com1' v1: field 'fifo_count': 7 exceeds the maximum 6");
    CHECK(d.u32_max("fifo_count", 16).value() == 7);
    auto str = d.string("name", 2);
    REQUIRE_FALSE(str.has_value());
    CHECK(str.error().message == "state: section 'uart/com1' v1: field 'name': length 3 exceeds the maximum 2");
    str = d.string("name", 8);
    REQUIRE_FALSE(str.has_value());
    CHECK(str.error().message == "state: section 'uart/com1' v1: field 'name': length 3 exceeds the 2 bytes left");

    auto fin = d.finish();
    REQUIRE_FALSE(fin.has_value());
    CHECK(fin.error().message == "state: section 'uart/com1' v1: 6 bytes left over after the last field");

    auto wide = d.u64("divisor");
    REQUIRE_FALSE(wide.has_value());
    CHECK(wide.error().message == "state: section 'uart/com1' v1: field 'divisor': needs 8 bytes, 6 left");
    auto raw = d.bytes("fifo", 7);
    REQUIRE_FALSE(raw.has_value());
    CHECK(raw.error().message == "state: section 'uart/com1' v1: field 'fifo': needs 7 bytes, 6 left");
    CHECK(d.bytes("fifo", 6).has_value());
    auto lcr = d.u8("lcr");
    REQUIRE_FALSE(lcr.has_value());
    CHECK(lcr.error().message == "state: section 'uart/com1' v1: field 'lcr': needs 1 byte, 0 left");
    CHECK(lcr.error().kind == ErrorKind::BadRequest);
    CHECK(d.finish().has_value());
}
