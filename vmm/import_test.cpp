#include "vmm/import.hpp"

#include <doctest/doctest.h>

#include <unistd.h>

#include <filesystem>
#include <fstream>

using namespace kestrel;
using nlohmann::json;

namespace {

json layer(std::string format, uint64_t size, std::string file = "/x/disk") {
    return json{{"format", std::move(format)}, {"virtual-size", size}, {"filename", std::move(file)}};
}

std::string error_of(const Result<SourceImage>& r) { return r ? std::string("accepted") : r.error().what(); }

bool has(const std::string& s, const std::string& needle) { return s.find(needle) != std::string::npos; }

}  // namespace

TEST_CASE("import: qemu-img info of a plain image gives its format and size") {
    auto r = check_source_info(json::array({layer("vmdk", 10 << 20)}), "disk.vmdk");
    REQUIRE(r);
    CHECK(r->format == "vmdk");
    CHECK(r->virtual_size == 10u << 20);
    CHECK(r->reads.empty());
}

TEST_CASE("import: malformed or empty info is refused") {
    CHECK(has(error_of(check_source_info(json::object(), "a.qcow2")), "no image description"));
    CHECK(has(error_of(check_source_info(json::array(), "a.qcow2")), "no image description"));
    CHECK(has(error_of(check_source_info(json::array({json{{"virtual-size", 512}}}), "a")), "names no format"));
    CHECK(has(error_of(check_source_info(json::array({json{{"format", "raw"}}}), "a")), "no virtual size"));
    CHECK(has(error_of(check_source_info(json::array({layer("qcow2", 0)}), "a.qcow2")),
              "source 'a.qcow2' is a disk of 0 bytes"));
}

TEST_CASE("import: a file named like a disk format that qemu-img reads as raw is refused") {
    for (auto [name, label] : {std::pair{"x.vmdk", "VMDK"}, {"X.VHD", "VHD"}, {"d/x.vhdx", "VHDX"},
                               {"x.qcow2", "qcow2"}, {"x.vdi", "VDI"}}) {
        CAPTURE(name);
        auto e = error_of(check_source_info(json::array({layer("raw", 512)}), name));
        CHECK(has(e, fmt::format("source '{}' is named like a {} image but qemu-img finds no {} header", name,
                                 label, label)));
    }
    // Raw data under a raw name, or a real VMDK under any name, is fine.
    CHECK(check_source_info(json::array({layer("raw", 512)}), "x.img"));
    CHECK(check_source_info(json::array({layer("vmdk", 512)}), "x.img"));
}

TEST_CASE("import: corrupt, encrypted and unreachable or non-file backing layers are refused") {
    json corrupt = layer("qcow2", 1 << 20);
    corrupt["format-specific"] = json{{"type", "qcow2"}, {"data", {{"corrupt", true}}}};
    CHECK(has(error_of(check_source_info(json::array({corrupt}), "c.qcow2")), "marked corrupt"));

    json enc = layer("qcow2", 1 << 20);
    enc["encrypted"] = true;
    CHECK(has(error_of(check_source_info(json::array({enc}), "e.qcow2")), "is encrypted"));

    // A backing file that is a device (or gone since qemu-img opened it) is not followed.
    auto dev = check_source_info(json::array({layer("qcow2", 1 << 20), layer("raw", 1 << 20, "/dev/null")}),
                                 "top.qcow2");
    CHECK(has(error_of(dev), "reads '/dev/null' (a backing file or extent), which is not a regular file"));
    json vmdk = layer("vmdk", 1 << 20, "/x/desc.vmdk");
    vmdk["format-specific"] = json{{"type", "vmdk"},
                                   {"data", {{"extents", json::array({json{{"filename", "/dev/zero"}}})}}}};
    CHECK(has(error_of(check_source_info(json::array({vmdk}), "desc.vmdk")), "reads '/dev/zero'"));
}

TEST_CASE("import: regular backing files and extents are listed once; a monolithic VMDK is not") {
    namespace fs = std::filesystem;
    const fs::path dir = fs::temp_directory_path() / fmt::format("kestrel-import-test-{}", ::getpid());
    fs::create_directories(dir);
    const std::string base = (dir / "base.qcow2").string(), extent = (dir / "x-s001.vmdk").string();
    std::ofstream(base) << "b";
    std::ofstream(extent) << "e";
    json top = layer("vmdk", 1 << 20, (dir / "x.vmdk").string());
    top["format-specific"] = json{
        {"type", "vmdk"},
        {"data", {{"extents", json::array({json{{"filename", extent}}, json{{"filename", extent}}})}}}};
    auto r = check_source_info(json::array({top, layer("qcow2", 1 << 20, base)}), "x.vmdk");
    REQUIRE(r);
    CHECK(r->reads == std::vector<std::string>{extent, base});

    json mono = layer("vmdk", 1 << 20, "/nonexistent/m.vmdk");
    mono["format-specific"] = json{
        {"type", "vmdk"}, {"data", {{"extents", json::array({json{{"filename", "/nonexistent/m.vmdk"}}})}}}};
    auto m = check_source_info(json::array({mono}), "m.vmdk");
    CHECK(m);
    fs::remove_all(dir);
}

TEST_CASE("import: progress parser takes complete reports split anywhere") {
    ProgressParser p;
    CHECK_FALSE(p.feed("    (0.00/1"));
    auto a = p.feed("00%)\r    (12.5");
    REQUIRE(a);
    CHECK(*a == doctest::Approx(0.0));
    auto b = p.feed("0/100%)\r    (40.00/100%)\r");
    REQUIRE(b);
    CHECK(*b == doctest::Approx(40.0));
    CHECK_FALSE(p.feed("noise without a report"));
    CHECK_FALSE(p.feed("(abc/100%)"));  // not a number
    CHECK_FALSE(p.feed("(250/100%)"));  // out of range
    auto c = p.feed("    (100.00/100%)\r\n");
    REQUIRE(c);
    CHECK(*c == doctest::Approx(100.0));
}
