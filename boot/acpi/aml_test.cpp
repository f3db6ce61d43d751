#include "boot/acpi/aml.hpp"

#include <doctest/doctest.h>

#include "boot/acpi/resource_template.hpp"

using namespace kestrel::acpi::aml;

namespace {
Bytes pkg_len(uint32_t total) {
    auto r = encode_pkg_length(total);
    REQUIRE(r);
    return *r;
}
Bytes ok(kestrel::Result<Bytes> r) {
    REQUIRE_MESSAGE(r, (r ? "" : r.error().what()));
    return *r;
}
}  // namespace

TEST_CASE("aml: PkgLength uses 1..4 bytes at the right boundaries") {
    CHECK(pkg_len(0x00) == Bytes{0x00});
    CHECK(pkg_len(0x3f) == Bytes{0x3f});
    // Two bytes: lead byte 0b01 in bits 7:6, low nibble in 3:0, then bits 11:4.
    CHECK(pkg_len(0x40) == Bytes{0x40, 0x04});
    CHECK(pkg_len(0x41) == Bytes{0x41, 0x04});
    CHECK(pkg_len(0x123) == Bytes{0x43, 0x12});
    CHECK(pkg_len(0xfff) == Bytes{0x4f, 0xff});
    CHECK(pkg_len(0x1000) == Bytes{0x80, 0x00, 0x01});
    CHECK(pkg_len(0xfffff) == Bytes{0x8f, 0xff, 0xff});
    CHECK(pkg_len(0x100000) == Bytes{0xc0, 0x00, 0x00, 0x01});
    CHECK(pkg_len(0x0fffffff) == Bytes{0xcf, 0xff, 0xff, 0xff});
    CHECK_FALSE(encode_pkg_length(0x10000000));
}

TEST_CASE("aml: with_pkg_length counts its own bytes") {
    auto prefix_of = [](size_t body_len) {
        Bytes body(body_len, 0xaa);
        Bytes out = ok(with_pkg_length(body));
        REQUIRE(out.size() > body_len);
        return Bytes(out.begin(), out.end() - static_cast<std::ptrdiff_t>(body_len));
    };
    CHECK(prefix_of(0) == Bytes{0x01});
    CHECK(prefix_of(0x3e) == Bytes{0x3f});           // 1 + 0x3e = 0x3f: still one byte
    CHECK(prefix_of(0x3f) == Bytes{0x41, 0x04});     // 1 + 0x3f = 0x40 > 0x3f: 2 + 0x3f
    CHECK(prefix_of(0xffd) == Bytes{0x4f, 0xff});    // 2 + 0xffd = 0xfff
    CHECK(prefix_of(0xffe) == Bytes{0x81, 0x00, 0x01});  // 3 + 0xffe = 0x1001
    CHECK(prefix_of(0xffffc) == Bytes{0x8f, 0xff, 0xff});
    CHECK(prefix_of(0xffffd) == Bytes{0xc1, 0x00, 0x00, 0x01});
}

TEST_CASE("aml: integers take the shortest encoding") {
    CHECK(integer(0) == Bytes{0x00});                       // ZeroOp
    CHECK(integer(1) == Bytes{0x01});                       // OneOp
    CHECK(integer(2) == Bytes{0x0a, 0x02});                 // BytePrefix
    CHECK(integer(0xff) == Bytes{0x0a, 0xff});
    CHECK(integer(0x100) == Bytes{0x0b, 0x00, 0x01});       // WordPrefix
    CHECK(integer(0xffff) == Bytes{0x0b, 0xff, 0xff});
    CHECK(integer(0x10000) == Bytes{0x0c, 0x00, 0x00, 0x01, 0x00});  // DWordPrefix
    CHECK(integer(0xfee00000) == Bytes{0x0c, 0x00, 0x00, 0xe0, 0xfe});
    CHECK(integer(0x100000000) == Bytes{0x0e, 0, 0, 0, 0, 1, 0, 0, 0});  // QWordPrefix
    CHECK(integer(~uint64_t{0}) == Bytes{0xff});            // OnesOp
    CHECK(integer(0xffffffff) == Bytes{0x0c, 0xff, 0xff, 0xff, 0xff});
}

TEST_CASE("aml: name strings") {
    CHECK(ok(name_string("_S5_")) == Bytes{'_', 'S', '5', '_'});
    CHECK(ok(name_string("_SB")) == Bytes{'_', 'S', 'B', '_'});
    CHECK(ok(name_string("\\_SB")) == Bytes{'\\', '_', 'S', 'B', '_'});
    CHECK(ok(name_string("\\")) == Bytes{'\\', 0x00});
    CHECK(ok(name_string("^^COM1")) == Bytes{'^', '^', 'C', 'O', 'M', '1'});
    CHECK(ok(name_string("\\_SB.COM1")) ==
          Bytes{'\\', 0x2e, '_', 'S', 'B', '_', 'C', 'O', 'M', '1'});
    CHECK(ok(name_string("A.B.C")) ==
          Bytes{0x2f, 3, 'A', '_', '_', '_', 'B', '_', '_', '_', 'C', '_', '_', '_'});
    CHECK_FALSE(name_string(""));
    CHECK_FALSE(name_string("TOOLONG"));
    CHECK_FALSE(name_string("1ABC"));   // digits cannot lead
    CHECK_FALSE(name_string("com1"));   // AML names are upper case
    CHECK_FALSE(name_string("A..B"));
    CHECK_FALSE(name_string("A."));
    CHECK_FALSE(name_string("\\^A"));
}

TEST_CASE("aml: EISAID compression") {
    CHECK(*eisa_id_value("PNP0501") == 0x0105d041u);
    CHECK(*eisa_id_value("PNP0A03") == 0x030ad041u);
    CHECK(ok(eisa_id("PNP0501")) == Bytes{0x0c, 0x41, 0xd0, 0x05, 0x01});
    CHECK_FALSE(eisa_id_value("PNP050"));
    CHECK_FALSE(eisa_id_value("pnp0501"));
    CHECK_FALSE(eisa_id_value("PNP05G1"));
}

TEST_CASE("aml: packages, buffers and named objects") {
    const Bytes elems[] = {integer(5), integer(5), integer(0), integer(0)};
    CHECK(ok(package(elems)) == Bytes{0x12, 0x08, 0x04, 0x0a, 0x05, 0x0a, 0x05, 0x00, 0x00});
    CHECK_FALSE(package(std::vector<Bytes>(256, integer(0))));
    CHECK(ok(package(std::vector<Bytes>(255, integer(0)))).size() == 1 + 2 + 1 + 255);

    const uint8_t data[] = {1, 2, 3};
    CHECK(ok(buffer(data)) == Bytes{0x11, 0x06, 0x0a, 0x03, 1, 2, 3});

    CHECK(ok(name("_UID", integer(1))) == Bytes{0x08, '_', 'U', 'I', 'D', 0x01});
    CHECK(ok(device("COM1", {})) == Bytes{0x5b, 0x82, 0x05, 'C', 'O', 'M', '1'});
    CHECK(ok(scope("\\_SB", {})) == Bytes{0x10, 0x06, '\\', '_', 'S', 'B', '_'});
    // Method(_STA, 0, NotSerialized) { Return (0x0F) }
    CHECK(ok(method("_STA", 0, false, return_value(integer(0xf)))) ==
          Bytes{0x14, 0x09, '_', 'S', 'T', 'A', 0x00, 0xa4, 0x0a, 0x0f});
    CHECK(ok(method("FOO", 2, true, {})) == Bytes{0x14, 0x06, 'F', 'O', 'O', '_', 0x0a});
    CHECK_FALSE(method("FOO", 8, false, {}));
    CHECK_FALSE(device("bad", {}));
}

TEST_CASE("aml: a device body longer than 63 bytes gets a two-byte PkgLength") {
    Bytes terms;
    for (int i = 0; i < 11; ++i) terms = concat({terms, ok(name("_UID", integer(1)))});  // 66 bytes
    Bytes dev = ok(device("DEV0", terms));
    // 4 name bytes + 66 = 70 body bytes, + 2 PkgLength bytes = 72 = 0x48.
    CHECK(dev.size() == 2 + 2 + 70);
    CHECK(dev[2] == 0x48);
    CHECK(dev[3] == 0x04);
}

TEST_CASE("aml: resource template for a 16550 at 0x3f8, IRQ 4") {
    const Bytes res[] = {io_port_decode16(0x3f8, 0x3f8, 0, 8), irq_no_flags(1u << 4)};
    CHECK(ok(resource_template(res)) ==
          Bytes{0x11, 0x10, 0x0a, 0x0d,                            // Buffer(13)
                0x47, 0x01, 0xf8, 0x03, 0xf8, 0x03, 0x00, 0x08,    // IO(Decode16, ...)
                0x22, 0x10, 0x00,                                  // IRQNoFlags(){4}
                0x79, 0x00});                                      // EndTag
}

TEST_CASE("aml: PCI host bridge windows as Word/DWord address space descriptors") {
    // WordBusNumber(ResourceProducer, MinFixed, MaxFixed, PosDecode, 0, 0, 0xff, 0, 0x100)
    CHECK(ok(word_bus_number(0, 0xff)) ==
          Bytes{0x88, 0x0d, 0x00,        // large item 0x08, 13 data bytes
                0x02, 0x0c, 0x00,        // bus numbers; _MAF|_MIF, producer; no type flags
                0x00, 0x00, 0x00, 0x00,  // _GRA, _MIN
                0xff, 0x00, 0x00, 0x00,  // _MAX, _TRA
                0x00, 0x01});            // _LEN
    // WordIO(..., EntireRange, 0, 0, 0xcf7, 0, 0xcf8)
    CHECK(ok(word_io(0, 0xcf7)) == Bytes{0x88, 0x0d, 0x00, 0x01, 0x0c, 0x03, 0x00, 0x00, 0x00,
                                         0x00, 0xf7, 0x0c, 0x00, 0x00, 0xf8, 0x0c});
    CHECK(ok(word_io(0xd00, 0xffff)) == Bytes{0x88, 0x0d, 0x00, 0x01, 0x0c, 0x03, 0x00, 0x00,
                                              0x00, 0x0d, 0xff, 0xff, 0x00, 0x00, 0x00, 0xf3});
    // DWordMemory(..., NonCacheable, ReadWrite, 0, 0xc0000000, 0xdfffffff, 0, 0x20000000)
    CHECK(ok(dword_memory(MemoryCaching::kNonCacheable, true, 0xc000'0000, 0xdfff'ffff)) ==
          Bytes{0x87, 0x17, 0x00, 0x00, 0x0c, 0x01,
                0x00, 0x00, 0x00, 0x00,   // _GRA
                0x00, 0x00, 0x00, 0xc0,   // _MIN
                0xff, 0xff, 0xff, 0xdf,   // _MAX
                0x00, 0x00, 0x00, 0x00,   // _TRA
                0x00, 0x00, 0x00, 0x20}); // _LEN
    // Prefetchable read-only: _MEM = 3 in bits 2:1, _RW clear.
    CHECK(ok(dword_memory(MemoryCaching::kPrefetchable, false, 0, 0xfff))[5] == 0x06);
    // The whole 32-bit space is 2^32 bytes: its length does not fit _LEN.
    CHECK_FALSE(dword_memory(MemoryCaching::kNonCacheable, true, 0, 0xffff'ffff));
    CHECK_FALSE(word_io(0x100, 0xff));
    CHECK_FALSE(word_bus_number(1, 0));
    CHECK(ok(word_bus_number(7, 7)).back() == 0x00);  // _LEN 1
}

TEST_CASE("aml: Memory32Fixed") {
    CHECK(ok(memory32_fixed(true, 0xe000'0000, 0x10'0000)) ==
          Bytes{0x86, 0x09, 0x00, 0x01, 0x00, 0x00, 0x00, 0xe0, 0x00, 0x00, 0x10, 0x00});
    CHECK(ok(memory32_fixed(false, 0x1000, 0x1000))[3] == 0x00);
    CHECK(ok(memory32_fixed(true, 0xffff'f000, 0x1000)).size() == 12);  // ends exactly at 4 GiB
    CHECK_FALSE(memory32_fixed(true, 0xffff'f000, 0x1001));
}
