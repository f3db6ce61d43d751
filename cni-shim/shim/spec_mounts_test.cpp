#include "cni-shim/shim/spec_mounts.hpp"

#include <doctest/doctest.h>

using namespace kestrel::shim;
using nlohmann::json;

TEST_CASE("guest_mounts turns the CRI plugin's host binds into what the pod VM can mount") {
    // The mounts of a container spec made by containerd 1.6's CRI plugin (abridged).
    json config = json::parse(R"({"mounts": [
        {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/etc/hosts", "type": "bind", "source": "/var/lib/containerd/io.containerd.grpc.v1.cri/sandboxes/x/hosts", "options": ["rbind", "rprivate", "rw"]},
        {"destination": "/etc/resolv.conf", "source": "/var/lib/x/resolv.conf", "options": ["rbind", "rw"]},
        {"destination": "/dev/shm", "type": "bind", "source": "/run/containerd/io.containerd.grpc.v1.cri/sandboxes/x/shm", "options": ["rbind", "ro"]},
        "not an object"]})");
    auto changes = guest_mounts(config);
    CHECK(changes.size() == 3);
    const auto& m = config["mounts"];
    REQUIRE(m.size() == 3);
    CHECK(m[0]["type"] == "proc");
    CHECK(m[1]["destination"] == "/dev/shm");
    CHECK(m[1]["type"] == "tmpfs");
    CHECK(m[1]["source"] == "shm");
    CHECK(m[2] == "not an object");  // the agent refuses it with the field's name
}

TEST_CASE("guest_mounts leaves a spec without binds or without mounts alone") {
    json none = json::object();
    CHECK(guest_mounts(none).empty());
    CHECK_FALSE(none.contains("mounts"));
    json odd = {{"mounts", "x"}};
    CHECK(guest_mounts(odd).empty());
    CHECK(odd["mounts"] == "x");
    json plain = json::parse(R"({"mounts": [{"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": [1]}]})");
    json before = plain;
    CHECK(guest_mounts(plain).empty());
    CHECK(plain == before);
}
