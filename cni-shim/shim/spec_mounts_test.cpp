#include "cni-shim/shim/spec_mounts.hpp"

#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

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
    auto result = guest_mounts(config);
    const auto& changes = result.changes;
    CHECK(changes.size() == 3);
    const auto& m = config["mounts"];
    REQUIRE(m.size() == 3);
    CHECK(m[0]["type"] == "proc");
    CHECK(m[1]["destination"] == "/dev/shm");
    CHECK(m[1]["type"] == "kestrel-pod-volume");  // one per pod, as the sandbox's shm is
    CHECK(m[1]["source"] == "shm");
    CHECK(m[1]["mode"] == 01777);
    CHECK(m[2] == "not an object");  // the agent refuses it with the field's name
}

TEST_CASE("guest_mounts leaves a spec without binds or without mounts alone") {
    json none = json::object();
    CHECK(guest_mounts(none).changes.empty());
    CHECK_FALSE(none.contains("mounts"));
    json odd = {{"mounts", "x"}};
    CHECK(guest_mounts(odd).changes.empty());
    CHECK(odd["mounts"] == "x");
    json plain = json::parse(R"({"mounts": [{"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": [1]}]})");
    json before = plain;
    CHECK(guest_mounts(plain).changes.empty());
    CHECK(plain == before);
}

namespace {
struct TempDir {
    std::string path;
    TempDir() {
        char t[] = "/tmp/kestrel-mounts-XXXXXX";
        REQUIRE(::mkdtemp(t) != nullptr);
        path = t;
    }
    ~TempDir() { std::filesystem::remove_all(path); }
    void write(const std::string& rel, const std::string& data, mode_t mode = 0644) const {
        std::filesystem::create_directories(std::filesystem::path(path + "/" + rel).parent_path());
        std::ofstream(path + "/" + rel, std::ios::binary) << data;
        ::chmod((path + "/" + rel).c_str(), mode);
    }
};
}  // namespace

TEST_CASE("base64_encode: RFC 4648 test vectors") {
    CHECK(base64_encode("") == "");
    CHECK(base64_encode("f") == "Zg==");
    CHECK(base64_encode("fo") == "Zm8=");
    CHECK(base64_encode("foo") == "Zm9v");
    CHECK(base64_encode("foobar") == "Zm9vYmFy");
    CHECK(base64_encode(std::string("\xff\x00\x01", 3)) == "/wAB");
}

TEST_CASE("guest_mounts sends the CRI plugin's files and read-only volumes by value") {
    TempDir t;
    t.write("hosts", "127.0.0.1 localhost\n10.88.7.2 p1\n");
    t.write("resolv.conf", "nameserver 10.88.7.1\n");
    // A configMap volume as the kubelet's atomic writer lays it out.
    t.write("cm/..2026_12_07_04_00_00.1/app.conf", "key=value\n");
    t.write("cm/..2026_12_07_04_00_00.1/secret.bin", std::string("\x00\xff", 2), 0600);
    std::filesystem::create_directory_symlink("..2026_12_07_04_00_00.1", t.path + "/cm/..data");
    std::filesystem::create_symlink("..data/app.conf", t.path + "/cm/app.conf");
    std::filesystem::create_symlink("..data/secret.bin", t.path + "/cm/secret.bin");
    std::filesystem::create_directory(t.path + "/empty");
    std::filesystem::create_directory(t.path + "/emptydir-vol");
    json config = {{"mounts", json::array({
        {{"destination", "/etc/hosts"}, {"type", "bind"}, {"source", t.path + "/hosts"}, {"options", {"rbind", "rprivate", "rw"}}},
        {{"destination", "/etc/resolv.conf"}, {"type", "bind"}, {"source", t.path + "/resolv.conf"}, {"options", {"rbind", "ro"}}},
        {{"destination", "/etc/cfg"}, {"type", "bind"}, {"source", t.path + "/cm"}, {"options", {"rbind", "ro"}}},
        {{"destination", "/etc/none"}, {"type", "bind"}, {"source", t.path + "/empty"}, {"options", {"rbind", "ro"}}},
        {{"destination", "/data"}, {"type", "bind"}, {"source", t.path + "/emptydir-vol"}, {"options", {"rbind", "rw"}}},
        {{"destination", "/etc/gone"}, {"type", "bind"}, {"source", t.path + "/absent"}, {"options", {"rbind", "ro"}}}})}};
    auto result = guest_mounts(config);
    const auto& changes = result.changes;
    REQUIRE(changes.size() == 6);
    CHECK(changes[0].find("copied into the pod VM (1 file, 33 bytes)") != std::string::npos);
    CHECK(changes[2].find("(2 files, 12 bytes, read-only)") != std::string::npos);
    CHECK(changes[4].find("cannot have (read-write") != std::string::npos);  // a hostPath: the container is refused
    CHECK(changes[5].find("cannot have (No such file") != std::string::npos);
    REQUIRE(result.unsupported.size() == 2);
    CHECK(result.unsupported[0] == changes[4]);
    const auto& m = config["mounts"];
    REQUIRE(m.size() == 4);
    CHECK(m[0]["type"] == "kestrel-copy");
    CHECK_FALSE(m[0].contains("source"));
    CHECK(m[0]["options"] == json({"rbind", "rprivate", "rw"}));
    CHECK(m[0]["files"] == json::array({{{"path", ""}, {"contents_base64", base64_encode("127.0.0.1 localhost\n10.88.7.2 p1\n")}, {"mode", 0644}}}));
    CHECK(m[1]["files"][0]["contents_base64"] == base64_encode("nameserver 10.88.7.1\n"));
    // The directory: its files through the symlinks, the writer's "..*" entries skipped.
    CHECK(m[2]["files"] == json::array({{{"path", "app.conf"}, {"contents_base64", base64_encode("key=value\n")}, {"mode", 0644}},
                                        {{"path", "secret.bin"}, {"contents_base64", "AP8="}, {"mode", 0600}}}));
    CHECK(m[3]["type"] == "tmpfs");
    CHECK(m[3]["destination"] == "/etc/none");
}

TEST_CASE("guest_mounts keeps within its bounds and says which one a mount broke") {
    TempDir t;
    t.write("big", std::string(kCopyBudgetBytes - 10, 'x'));
    t.write("small", std::string(20, 'y'));
    for (std::size_t i = 0; i <= kCopyMaxFiles; ++i) t.write("many/f" + std::to_string(i), "");
    std::filesystem::create_directory(t.path + "/devs");
    std::filesystem::create_symlink("/dev/null", t.path + "/devs/null");
    std::string deep = "deep";
    for (int i = 0; i <= kCopyMaxDepth; ++i) deep += "/d";
    t.write(deep + "/f", "z");
    json config = {{"mounts", json::array({
        {{"destination", "/a"}, {"type", "bind"}, {"source", t.path + "/big"}, {"options", {"ro"}}},
        {{"destination", "/b"}, {"type", "bind"}, {"source", t.path + "/small"}, {"options", {"ro"}}},
        {{"destination", "/c"}, {"type", "bind"}, {"source", t.path + "/many"}, {"options", {"ro"}}},
        {{"destination", "/d"}, {"type", "bind"}, {"source", t.path + "/deep"}, {"options", {"ro"}}},
        {{"destination", "/e"}, {"type", "bind"}, {"source", "/dev/null"}, {"options", {"ro"}}},
        {{"destination", "/f"}, {"type", "bind"}, {"source", t.path + "/devs"}, {"options", {"ro"}}}})}};
    auto result = guest_mounts(config);
    const auto& changes = result.changes;
    REQUIRE(changes.size() == 6);
    CHECK(changes[0].find("copied") != std::string::npos);
    CHECK(changes[1].find("over the 512 KiB") != std::string::npos);   // the budget is per container
    CHECK(changes[2].find("more than 256 files") != std::string::npos);
    CHECK(changes[3].find("deeper than 8 directories") != std::string::npos);
    CHECK(changes[4].find("neither a regular file nor a directory") != std::string::npos);
    CHECK(changes[5].find("devs/null: neither a regular file nor a directory") != std::string::npos);
    CHECK(result.unsupported.size() == 5);  // all but the first: nothing over a bound goes in quietly
    CHECK(config["mounts"].size() == 1);
}

TEST_CASE("block_devices: a pod's volumeDevices as the CRI plugin puts them in the spec") {
    // containerd 1.6 CRI (oci.WithDevices): a devices entry and its cgroup rule per CRI device.
    json config = json::parse(R"({"linux": {
        "devices": [{"path": "/dev/xvda", "type": "b", "major": 7, "minor": 3, "fileMode": 432, "uid": 0, "gid": 0}],
        "resources": {"devices": [{"allow": false, "access": "rwm"},
                                  {"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rwm"},
                                  {"allow": true, "type": "b", "major": 7, "minor": 3, "access": "rwm"}]}}})");
    auto devs = block_devices(config);
    REQUIRE(devs);
    REQUIRE(devs->size() == 1);
    CHECK((*devs)[0].container_path == "/dev/xvda");
    CHECK((*devs)[0].major == 7);
    CHECK((*devs)[0].minor == 3);

    CHECK(block_devices(json::object())->empty());
    CHECK(block_devices(json::parse(R"({"linux": {"devices": null}})"))->empty());

    auto refused = [](const char* text) {
        auto r = block_devices(json::parse(text));
        REQUIRE(!r);
        return std::string(r.error().what());
    };
    CHECK(!(*devs)[0].read_only);
    auto read_only = [](const char* text) {
        auto r = block_devices(json::parse(text));
        REQUIRE(r);
        REQUIRE(r->size() == 1);
        return (*r)[0].read_only;
    };
    // Read-only: the kubelet's "r" for a readOnly volume, or no rule allowing writes.
    CHECK(read_only(R"({"linux": {"devices": [{"path": "/dev/v", "type": "b", "major": 7, "minor": 3}],
        "resources": {"devices": [{"allow": false, "access": "rwm"}, {"allow": true, "type": "b", "major": 7, "minor": 3, "access": "r"}]}}})"));
    CHECK(read_only(R"({"linux": {"devices": [{"path": "/dev/v", "type": "b", "major": 7, "minor": 3}],
        "resources": {"devices": [{"allow": true, "type": "b", "major": 7, "minor": 4, "access": "rwm"}]}}})"));
    // The last matching rule decides: a later deny takes the write back; a later allow of
    // every block device ("major": -1, no minor) gives it.
    CHECK(read_only(R"({"linux": {"devices": [{"path": "/dev/v", "type": "b", "major": 7, "minor": 3}],
        "resources": {"devices": [{"allow": true, "access": "rwm"}, {"allow": false, "type": "b", "major": 7, "minor": null, "access": "w"}]}}})"));
    CHECK(!read_only(R"({"linux": {"devices": [{"path": "/dev/v", "type": "b", "major": 7, "minor": 3}],
        "resources": {"devices": [{"allow": false, "access": "rwm"}, {"allow": true, "type": "b", "major": -1, "access": "rw"}]}}})"));
    // No cgroup list at all restricts nothing.
    CHECK(!read_only(R"({"linux": {"devices": [{"path": "/dev/v", "type": "b", "major": 7, "minor": 3}]}})"));
    // Character devices (a privileged pod's, a device plugin's) cannot go into a VM.
    CHECK(refused(R"({"linux": {"devices": [{"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229}]}})")
              .find("/dev/fuse is a character device") != std::string::npos);
    CHECK(refused(R"({"linux": {"devices": [{"path": "dev/v", "type": "b", "major": 7, "minor": 3}]}})").find("linux.devices[0].path") != std::string::npos);
    CHECK(refused(R"({"linux": {"devices": [{"path": "/dev/v", "type": "b", "major": -1, "minor": 3}]}})").find("major") != std::string::npos);
    CHECK(refused(R"({"linux": {"devices": [{"path": "/dev/v", "type": "b", "major": 7, "minor": "3"}]}})").find("minor") != std::string::npos);
    CHECK(refused(R"({"linux": {"devices": [{"path": "/dev/v", "type": "b", "major": 7, "minor": 3},
                                            {"path": "/dev/v", "type": "b", "major": 7, "minor": 4}]}})").find("given twice") != std::string::npos);
    CHECK(refused(R"({"linux": {"devices": {"path": "/dev/v"}}})").find("expected an array") != std::string::npos);
    CHECK(refused(R"({"linux": {"devices": ["x"]}})").find("linux.devices[0]: expected an object") != std::string::npos);
}

TEST_CASE("host_block_device finds the node through sysfs and checks it") {
    // A fake sysfs and /dev; the node is a real block device node (tests run as root).
    auto root = std::filesystem::temp_directory_path() / ("kestrel-blockdev-" + std::to_string(::getpid()));
    std::filesystem::remove_all(root);
    std::filesystem::create_directories(root / "sys/dev/block/7:3");
    std::filesystem::create_directories(root / "sys/dev/block/7:4");
    std::filesystem::create_directories(root / "sys/dev/block/7:5");
    std::filesystem::create_directories(root / "dev");
    std::ofstream(root / "sys/dev/block/7:3/uevent") << "MAJOR=7\nMINOR=3\nDEVNAME=loop3\nDEVTYPE=disk\n";
    std::ofstream(root / "sys/dev/block/7:4/uevent") << "MAJOR=7\nMINOR=4\nDEVNAME=../etc/passwd\n";
    std::ofstream(root / "sys/dev/block/7:5/uevent") << "MAJOR=7\nMINOR=5\nDEVNAME=loop5\n";
    REQUIRE(::mknod((root / "dev/loop3").c_str(), S_IFBLK | 0600, makedev(7, 3)) == 0);
    std::ofstream(root / "dev/loop5") << "a regular file";
    const std::string sys = (root / "sys").string(), dev = (root / "dev").string();

    auto found = host_block_device(7, 3, sys, dev);
    REQUIRE(found);
    CHECK(*found == dev + "/loop3");
    auto missing = host_block_device(8, 0, sys, dev);
    REQUIRE(!missing);
    CHECK(std::string(missing.error().what()).find("no block device 8:0 on this host") != std::string::npos);
    CHECK(!host_block_device(7, 4, sys, dev));
    auto not_block = host_block_device(7, 5, sys, dev);
    REQUIRE(!not_block);
    CHECK(std::string(not_block.error().what()).find("is not block device 7:5") != std::string::npos);
    std::filesystem::remove_all(root);
}

TEST_CASE("guest_mounts makes a kubelet emptyDir the pod's own directory in the VM") {
    json config = json::parse(R"({"mounts": [
        {"destination": "/scratch", "type": "bind", "source": "/var/lib/kubelet/pods/u1/volumes/kubernetes.io~empty-dir/scratch", "options": ["rbind", "rprivate", "rw"]},
        {"destination": "/cache", "type": "bind", "source": "/var/lib/kubelet/pods/u1/volumes/kubernetes.io~empty-dir/cache-1.x/", "options": ["rbind", "ro"]},
        {"destination": "/odd", "type": "bind", "source": "/var/lib/kubelet/pods/u1/volumes/kubernetes.io~empty-dir/a b", "options": ["rbind", "rw"]},
        {"destination": "/sub", "type": "bind", "source": "/var/lib/kubelet/pods/u1/volumes/kubernetes.io~empty-dir/..", "options": ["rbind", "rw"]}]})");
    auto result = guest_mounts(config);
    const auto& changes = result.changes;
    REQUIRE(changes.size() == 4);
    CHECK(changes[0].find("emptyDir scratch") != std::string::npos);
    CHECK(changes[2].find("cannot have") != std::string::npos);  // not a DNS label: not an emptyDir the kubelet made
    CHECK(changes[3].find("cannot have") != std::string::npos);
    CHECK(result.unsupported.size() == 2);
    const auto& m = config["mounts"];
    REQUIRE(m.size() == 2);
    CHECK(m[0]["type"] == "kestrel-pod-volume");
    CHECK(m[0]["source"] == "empty-dir-scratch");
    CHECK(m[0]["destination"] == "/scratch");
    CHECK(m[0]["options"] == json({"rbind", "rprivate", "rw"}));
    CHECK(m[1]["source"] == "empty-dir-cache-1.x");
    CHECK(m[1]["options"] == json({"rbind", "ro"}));  // a readOnly volumeMount stays read-only
}

TEST_CASE("guest_mounts drops the kubelet's termination-log file, and only that") {
    json config = json::parse(R"({"mounts": [
        {"destination": "/dev/termination-log", "type": "bind", "source": "/var/lib/kubelet/pods/u1/containers/c/0", "options": ["rbind", "rw"]}]})");
    auto result = guest_mounts(config);
    REQUIRE(result.changes.size() == 1);
    CHECK(result.changes[0].find("dropped") != std::string::npos);
    CHECK(result.unsupported.empty());
    CHECK(config["mounts"].empty());
}
