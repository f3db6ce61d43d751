#include "cni-shim/shim/pod_vm.hpp"

#include <unistd.h>

#include <cstdlib>
#include <fstream>

#include <doctest/doctest.h>

using namespace kestrel::shim;
using nlohmann::json;

namespace {
json sandbox_spec(const char* quota, const char* period, const char* memory) {
    // As containerd 1.6's CRI plugin writes them (pkg/cri/server/sandbox_run_linux.go).
    json ann = {{"io.kubernetes.cri.container-type", "sandbox"}};
    if (quota) ann["io.kubernetes.cri.sandbox-cpu-quota"] = quota;
    if (period) ann["io.kubernetes.cri.sandbox-cpu-period"] = period;
    if (memory) ann["io.kubernetes.cri.sandbox-memory"] = memory;
    return json{{"ociVersion", "1.0.2-dev"}, {"annotations", ann}};
}
}  // namespace

TEST_CASE("size_pod_vm adds the pod's limits to the configured size") {
    PodVmConfig cfg;  // 1 vCPU, 256 MiB
    auto s = size_pod_vm(cfg, sandbox_spec("150000", "100000", "134217728"));
    REQUIRE(s);
    CHECK(s->vcpus == 3);          // 1 + ceil(1.5)
    CHECK(s->memory_mib == 384);   // 256 + 128
    CHECK(s->notes.empty());
    s = size_pod_vm(cfg, sandbox_spec("100000", "100000", "1"));
    REQUIRE(s);
    CHECK(s->vcpus == 2);
    CHECK(s->memory_mib == 257);   // a byte over is a MiB more
}

TEST_CASE("size_pod_vm keeps the configured size without limits") {
    PodVmConfig cfg;
    cfg.vcpus = 2;
    cfg.memory_mib = 512;
    for (const json& spec : {json::object(), json{{"annotations", json::object()}}, json{{"annotations", "x"}},
                             json("not an object"), sandbox_spec("-1", "100000", "0"), sandbox_spec("0", "0", nullptr),
                             sandbox_spec("100000", "0", "-5")}) {
        auto s = size_pod_vm(cfg, spec);
        REQUIRE(s);
        CHECK(s->vcpus == 2);
        CHECK(s->memory_mib == 512);
    }
}

TEST_CASE("size_pod_vm caps at max_vcpus / max_memory_mib and says so") {
    PodVmConfig cfg;
    cfg.max_vcpus = 4;
    cfg.max_memory_mib = 1024;
    auto s = size_pod_vm(cfg, sandbox_spec("9223372036854775807", "1", "9223372036854775807"));
    REQUIRE(s);
    CHECK(s->vcpus == 4);
    CHECK(s->memory_mib == 1024);
    REQUIRE(s->notes.size() == 2);
    CHECK(s->notes[0].find("capped at max_vcpus 4") != std::string::npos);
    CHECK(s->notes[1].find("capped at max_memory_mib 1024") != std::string::npos);
}

TEST_CASE("size_pod_vm refuses an annotation that is not an integer, by name") {
    PodVmConfig cfg;
    for (const char* bad : {"", "12x", "1.5", " 1", "0x10", "99999999999999999999"}) {
        auto s = size_pod_vm(cfg, sandbox_spec(bad, "100000", nullptr));
        REQUIRE_FALSE(s);
        CHECK(std::string(s.error().what()).find("io.kubernetes.cri.sandbox-cpu-quota") != std::string::npos);
    }
    json spec = sandbox_spec(nullptr, nullptr, nullptr);
    spec["annotations"]["io.kubernetes.cri.sandbox-memory"] = 5;
    auto s = size_pod_vm(cfg, spec);
    REQUIRE_FALSE(s);
    CHECK(std::string(s.error().what()).find("io.kubernetes.cri.sandbox-memory: not a string") != std::string::npos);
}

TEST_CASE("load_pod_vm_config reads the size caps and refuses a size above them") {
    char tmpl[] = "/tmp/kestrel-shim-cfg-XXXXXX";
    int fd = ::mkstemp(tmpl);
    REQUIRE(fd >= 0);
    ::close(fd);
    std::string path = tmpl;
    auto write = [&](const char* text) { std::ofstream(path, std::ios::trunc) << text; };
    write(R"({"vcpus": 2, "max_vcpus": 8, "memory_mib": 512, "max_memory_mib": 2048})");
    auto c = load_pod_vm_config(path);
    REQUIRE(c);
    CHECK(c->max_vcpus == 8);
    CHECK(c->max_memory_mib == 2048);
    write(R"({"vcpus": 4, "max_vcpus": 2})");
    c = load_pod_vm_config(path);
    REQUIRE_FALSE(c);
    CHECK(std::string(c.error().what()).find("vcpus 4 is above max_vcpus 2") != std::string::npos);
    write(R"({"memory_mib": 20000})");   // above the default cap of 16384
    c = load_pod_vm_config(path);
    REQUIRE_FALSE(c);
    CHECK(std::string(c.error().what()).find("max_memory_mib 16384") != std::string::npos);
    // Drive slots: read-only spares and read-write volume drives, vda..vdz in all.
    write(R"({"spare_drives": 20, "volume_drives": 6})");
    c = load_pod_vm_config(path);
    REQUIRE(c);
    CHECK(c->spare_drives == 20);
    CHECK(c->volume_drives == 6);
    write(R"({"volume_drives": 7})");
    c = load_pod_vm_config(path);
    REQUIRE_FALSE(c);
    CHECK(std::string(c.error().what()).find("volume_drives: expected an integer 0..6") != std::string::npos);
    write(R"({"image_cache_keep_s": 60})");
    c = load_pod_vm_config(path);
    REQUIRE(c);
    CHECK(c->image_cache_keep == std::chrono::seconds(60));
    write(R"({"image_cache_keep_s": 59})");
    CHECK_FALSE(load_pod_vm_config(path));
    write("{}");
    c = load_pod_vm_config(path);
    REQUIRE(c);
    CHECK(c->volume_drives == 2);
    ::unlink(tmpl);
}
