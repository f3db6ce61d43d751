#include "vmm/vm_config.hpp"

#include <doctest/doctest.h>

using namespace kestrel;

TEST_CASE("memory sizes: suffixes, limits and garbage") {
    CHECK(*parse_memory_size("512") == 512ull << 20);
    CHECK(*parse_memory_size("512M") == 512ull << 20);
    CHECK(*parse_memory_size("2G") == 2ull << 30);
    CHECK(*parse_memory_size("65536K") == 64ull << 20);
    CHECK_FALSE(parse_memory_size("15M"));
    CHECK_FALSE(parse_memory_size("1000K"));  // not whole MiB
    CHECK_FALSE(parse_memory_size("2T"));
    CHECK_FALSE(parse_memory_size("lots"));
    CHECK_FALSE(parse_memory_size(""));
    CHECK_FALSE(parse_memory_size("99999999999999999999G"));
    CHECK_FALSE(parse_memory_size("2048G"));
    auto e = parse_memory_size("12X");
    REQUIRE_FALSE(e);
    CHECK(e.error().message.find("suffix") != std::string::npos);
}

TEST_CASE("serial targets") {
    CHECK(parse_serial("stdio")->kind == SerialTarget::Kind::Stdio);
    CHECK(parse_serial("none")->kind == SerialTarget::Kind::None);
    auto f = parse_serial("file:/tmp/x.log");
    REQUIRE(f);
    CHECK(f->kind == SerialTarget::Kind::File);
    CHECK(f->path == "/tmp/x.log");
    CHECK_FALSE(parse_serial("file:"));
    CHECK_FALSE(parse_serial("tcp:1234"));
}
