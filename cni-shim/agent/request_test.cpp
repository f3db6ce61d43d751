// The agent's request decoder: every op decodes into its struct; hostile or malformed
// requests are refused with the offending field named.
#include <doctest/doctest.h>

#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/resource.h>

#include <array>
#include <string>

#include <nlohmann/json.hpp>

#include "cni-shim/agent/request.hpp"

using namespace kestrel::agent;
using json = nlohmann::json;

namespace {

json minimal_spec() {
    return {{"process", {{"args", {"sh", "-c", "echo hi"}}, {"env", {"PATH=/bin"}}, {"cwd", "/"}}}};
}

json create_req() {
    return {{"id", 7},
            {"op", "create"},
            {"container", "c1"},
            {"spec", minimal_spec()},
            {"rootfs", {{"path", "/srv/c1"}}},
            {"stdio", {{"stdout", true}}}};
}

Request ok(const json& j) {
    auto r = decode_request(j.dump());
    INFO(j.dump());
    REQUIRE_MESSAGE(r.has_value(), (r ? std::string() : r.error().message));
    return *r;
}

// Refused, and the message contains `field`.
DecodeError refused(const json& j, const std::string& field) {
    auto r = decode_request(j.dump());
    INFO(j.dump());
    REQUIRE_FALSE(r.has_value());
    CHECK_MESSAGE(r.error().message.find(field) != std::string::npos, r.error().message);
    return r.error();
}

}  // namespace

TEST_CASE("frame lengths: 1 .. 1 MiB big-endian, 0 and larger refused") {
    const std::array<uint8_t, 4> one{0, 0, 0, 1}, max{0, 0x10, 0, 0}, zero{0, 0, 0, 0}, over{0, 0x10, 0, 1},
        huge{0xff, 0xff, 0xff, 0xff}, be{0x00, 0x01, 0x02, 0x03};
    CHECK(frame_length(one).value() == 1);
    CHECK(frame_length(max).value() == kMaxFrame);
    CHECK(frame_length(be).value() == 0x010203);
    CHECK(frame_length(zero).error().message.find("frame length") != std::string::npos);
    CHECK(frame_length(over).error().message.find("1 MiB") != std::string::npos);
    CHECK_FALSE(frame_length(huge).has_value());
}

TEST_CASE("ids") {
    CHECK(valid_id("abc-DEF_0.9"));
    CHECK(valid_id(std::string(128, 'a')));
    CHECK_FALSE(valid_id(std::string(129, 'a')));
    for (const char* bad : {"", ".", "..", "a/b", "../x", "a b", "a\nb", "é"}) CHECK_FALSE(valid_id(bad));
}

TEST_CASE("ping and shutdown") {
    auto r = ok({{"id", 1}, {"op", "ping"}});
    CHECK(r.id == 1);
    CHECK(std::holds_alternative<Ping>(r.body));
    CHECK(std::holds_alternative<Shutdown>(ok({{"id", 18446744073709551615ull}, {"op", "shutdown"}}).body));
}

TEST_CASE("create: spec, rootfs and stdio") {
    json j = create_req();
    j["spec"]["hostname"] = "pod-a";
    j["spec"]["root"] = {{"path", "rootfs"}, {"readonly", true}};
    j["spec"]["process"]["user"] = {{"uid", 1000}, {"gid", 100}, {"additionalGids", {5, 6}}, {"umask", 18}};
    j["spec"]["process"]["rlimits"] = {{{"type", "RLIMIT_NOFILE"}, {"soft", 1024}, {"hard", 4096}}};
    j["spec"]["process"]["noNewPrivileges"] = true;
    j["spec"]["mounts"] = {
        {{"destination", "/proc"}, {"type", "proc"}, {"source", "proc"}},
        {{"destination", "/dev"}, {"type", "tmpfs"}, {"options", {"nosuid", "mode=755", "size=64k"}}},
        {{"destination", "/data"}, {"type", "bind"}, {"source", "/srv/data"}, {"options", {"rbind", "ro", "rprivate"}}},
        {{"destination", "/etc/hosts"}, {"source", "/etc/hosts"}, {"options", {"bind"}}},
    };
    j["spec"]["linux"] = {{"namespaces", {{{"type", "pid"}}, {{"type", "network"}, {"path", "/proc/1/ns/net"}}}},
                          {"resources", {{"memory", {{"limit", 268435456}}},
                                         {"cpu", {{"quota", 50000}, {"period", 100000}}},
                                         {"pids", {{"limit", 64}}}}},
                          {"maskedPaths", {"/proc/kcore"}},
                          {"readonlyPaths", {"/proc/sys"}}};
    j["stdio"] = {{"stdin", true}, {"stdout", true}, {"stderr", true}, {"terminal", false}};
    auto r = ok(j);
    CHECK(r.id == 7);
    const auto& c = std::get<Create>(r.body);
    CHECK(c.container == "c1");
    CHECK(c.rootfs.path == "/srv/c1");
    CHECK(c.stdio.in);
    CHECK(c.stdio.err);
    const Spec& s = c.spec;
    CHECK(s.hostname == "pod-a");
    CHECK(s.root_readonly);
    CHECK(s.process.args == std::vector<std::string>{"sh", "-c", "echo hi"});
    CHECK(s.process.uid == 1000);
    CHECK(s.process.gid == 100);
    CHECK(s.process.additional_gids == std::vector<uint32_t>{5, 6});
    CHECK(s.process.umask == 18u);
    REQUIRE(s.process.rlimits.size() == 1);
    CHECK(s.process.rlimits[0].resource == RLIMIT_NOFILE);
    CHECK(s.process.rlimits[0].hard == 4096);
    CHECK(s.process.no_new_privileges);
    REQUIRE(s.mounts.size() == 4);
    CHECK(s.mounts[0].type == "proc");
    CHECK(s.mounts[1].flags == MS_NOSUID);
    CHECK(s.mounts[1].data == "mode=755,size=64k");
    CHECK(s.mounts[2].bind);
    CHECK(s.mounts[2].recursive);
    CHECK(s.mounts[2].flags == MS_RDONLY);
    CHECK(s.mounts[2].propagation == (MS_PRIVATE | MS_REC));
    CHECK(s.mounts[3].type == "bind");
    CHECK(s.network_namespace);
    CHECK(s.resources.memory_max == 268435456);
    CHECK(s.resources.cpu_max == "50000 100000");
    CHECK(s.resources.pids_max == 64);
    CHECK(s.masked_paths == std::vector<std::string>{"/proc/kcore"});
    CHECK(s.readonly_paths == std::vector<std::string>{"/proc/sys"});
}

TEST_CASE("create: device rootfs") {
    json j = create_req();
    j["rootfs"] = {{"device", "/dev/vdb"}, {"fstype", "erofs"}, {"writable_layer", true}};
    const auto c = std::get<Create>(ok(j).body);
    CHECK(c.rootfs.device == "/dev/vdb");
    CHECK(c.rootfs.fstype == "erofs");
    CHECK(c.rootfs.writable_layer);
    j["rootfs"] = {{"device", "/dev/vdb"}, {"fstype", "xfs"}};
    refused(j, "rootfs.fstype");
    j["rootfs"] = {{"device", "/etc/passwd"}, {"fstype", "ext4"}};
    refused(j, "rootfs.device");
    j["rootfs"] = {{"device", "/dev/vdb"}};
    refused(j, "rootfs.fstype: missing");
    j["rootfs"] = {{"device", "/dev/vdb"}, {"path", "/x"}, {"fstype", "ext4"}};
    refused(j, "rootfs");
    j["rootfs"] = json::object();
    refused(j, "rootfs.path: missing");
}

TEST_CASE("create: device rootfs size") {
    json j = create_req();
    j["rootfs"] = {{"device", "/dev/vdb"}, {"fstype", "ext4"}};
    CHECK(std::get<Create>(ok(j).body).rootfs.size == 0);
    j["rootfs"]["size"] = 64ull << 20;
    CHECK(std::get<Create>(ok(j).body).rootfs.size == 64ull << 20);
    j["rootfs"]["size"] = 1ull << 50;
    CHECK(std::get<Create>(ok(j).body).rootfs.size == 1ull << 50);
    for (json bad : {json(0), json(513), json((1ull << 50) + 512), json(-512), json("4096"), json(4096.5)}) {
        j["rootfs"]["size"] = bad;
        refused(j, "rootfs.size");
    }
}

TEST_CASE("create: kestrel-drive mounts (a block volume swapped into a guest drive)") {
    json j = create_req();
    j["spec"]["mounts"] = json::array({{{"destination", "/dev/kvol"}, {"type", "kestrel-drive"}, {"source", "/dev/vdc"},
                                        {"size", 64ull << 20}}});
    const auto c = std::get<Create>(ok(j).body);
    REQUIRE(c.spec.mounts.size() == 1);
    const Mount& m = c.spec.mounts[0];
    CHECK(m.bind);
    CHECK(m.type == "bind");
    CHECK(m.source == "/dev/vdc");
    CHECK(m.drive_size == 64ull << 20);
    CHECK(m.destination == "/dev/kvol");
    auto& mj = j["spec"]["mounts"][0];
    for (json bad : {json(0), json(100), json(-512), json("512"), json((1ull << 50) + 512)}) {
        mj["size"] = bad;
        refused(j, "spec.mounts[0].size");
    }
    mj.erase("size");
    refused(j, "spec.mounts[0].size: missing");
    mj["size"] = 4096;
    for (json bad : {json("/etc/passwd"), json("dev/vdc"), json("/dev/../etc/shadow"), json(""), json(7)}) {
        mj["source"] = bad;
        refused(j, "spec.mounts[0].source");
    }
    mj.erase("source");
    refused(j, "spec.mounts[0].source");
}

TEST_CASE("create: kestrel-pod-volume mounts (emptyDir, /dev/shm: one directory per pod)") {
    json j = create_req();
    j["spec"]["mounts"] = json::array({{{"destination", "/scratch"}, {"type", "kestrel-pod-volume"}, {"source", "empty-dir-scratch"},
                                        {"options", {"rbind", "rprivate", "rw"}}},
                                       {{"destination", "/dev/shm"}, {"type", "kestrel-pod-volume"}, {"source", "shm"},
                                        {"mode", 01777}, {"options", {"nosuid", "nodev", "noexec"}}}});
    const auto c = std::get<Create>(ok(j).body);
    REQUIRE(c.spec.mounts.size() == 2);
    CHECK(c.spec.mounts[0].pod_volume == "empty-dir-scratch");
    CHECK(c.spec.mounts[0].pod_volume_mode == 0777);
    CHECK(c.spec.mounts[0].source.empty());  // the agent makes it
    CHECK(c.spec.mounts[0].bind);
    CHECK(c.spec.mounts[0].recursive);
    CHECK(c.spec.mounts[0].type == "bind");
    CHECK(c.spec.mounts[1].pod_volume == "shm");
    CHECK(c.spec.mounts[1].pod_volume_mode == 01777);
    CHECK(c.spec.mounts[1].flags == (MS_NOSUID | MS_NODEV | MS_NOEXEC));
    auto& mj = j["spec"]["mounts"][1];
    for (json bad : {json(".."), json("a/b"), json(""), json("/dev/shm"), json(std::string(129, 'a')), json(3)}) {
        mj["source"] = bad;
        refused(j, "spec.mounts[1].source");
    }
    mj["source"] = "shm";
    for (json bad : {json(010000), json(-1), json("0777")}) {
        mj["mode"] = bad;
        refused(j, "spec.mounts[1].mode");
    }
}

TEST_CASE("create: kestrel-copy mounts (a host file or directory sent by value)") {
    json j = create_req();
    j["spec"]["mounts"] = json::array({
        {{"destination", "/etc/hosts"}, {"type", "kestrel-copy"}, {"options", {"ro"}},
         {"files", {{{"path", ""}, {"contents_base64", "MTI3LjAuMC4xIGxvY2FsaG9zdAo="}}}}},
        {{"destination", "/etc/cfg"}, {"type", "kestrel-copy"},
         {"files", {{{"path", "a"}, {"contents_base64", ""}, {"mode", 0600}},
                    {{"path", "sub/b"}, {"contents_base64", "/w=="}},
                    {{"path", "c"}, {"contents_base64", "AAEC"}}}}}});
    const auto c = std::get<Create>(ok(j).body);
    REQUIRE(c.spec.mounts.size() == 2);
    const auto& f = c.spec.mounts[0];
    CHECK(f.copy);
    CHECK(f.bind);
    CHECK(f.type == "bind");
    CHECK(f.source.empty());                 // the agent makes it at create
    CHECK((f.flags & MS_RDONLY) != 0);
    REQUIRE(f.files.size() == 1);
    CHECK(f.files[0].contents == "127.0.0.1 localhost\n");
    CHECK(f.files[0].mode == 0644);
    const auto& d = c.spec.mounts[1];
    REQUIRE(d.files.size() == 3);
    CHECK(d.files[0].contents.empty());
    CHECK(d.files[0].mode == 0600);
    CHECK(d.files[1].path == "sub/b");
    CHECK(d.files[1].contents == std::string("\xff"));
    CHECK(d.files[2].contents == std::string("\x00\x01\x02", 3));

    auto with = [&](json files, json extra = json::object()) {
        json k = create_req();
        json m = {{"destination", "/x"}, {"type", "kestrel-copy"}, {"files", std::move(files)}};
        m.update(extra);
        k["spec"]["mounts"] = json::array({m});
        return k;
    };
    refused(with(json::array()), "spec.mounts[0].files: missing or empty");
    refused(with({{{"path", ""}, {"contents_base64", ""}}, {{"path", "b"}, {"contents_base64", ""}}}), "files[0].path");
    for (const char* bad : {"/abs", "../up", "a/../b", "a//b", "a/", ".", "x/."}) {
        refused(with({{{"path", bad}, {"contents_base64", ""}}}), "files[0].path");
    }
    refused(with({{{"path", "a"}, {"contents_base64", ""}}, {{"path", "a"}, {"contents_base64", ""}}}), "given twice");
    for (const char* bad : {"abc", "ab=c", "a===", "ab!=", "=AAA"}) {
        refused(with({{{"path", "a"}, {"contents_base64", bad}}}), "files[0].contents_base64: not base64");
    }
    refused(with({{{"path", "a"}, {"contents_base64", ""}, {"mode", 010000}}}), "files[0].mode");
    refused(with({{{"path", "a"}}}), "files[0].contents_base64: missing");
    refused(with({{{"path", "a"}, {"contents_base64", ""}}}, {{"source", "/host/path"}}), "spec.mounts[0].source");
    json many = json::array();
    for (int i = 0; i < 257; ++i) many.push_back({{"path", "f" + std::to_string(i)}, {"contents_base64", ""}});
    refused(with(many), "spec.mounts[0].files");
}

TEST_CASE("terminal: stderr rides on the pty") {
    json j = create_req();
    j["stdio"] = {{"stdout", true}, {"stderr", true}, {"terminal", true}};
    const auto c = std::get<Create>(ok(j).body);
    CHECK(c.stdio.terminal);
    CHECK_FALSE(c.stdio.err);
}

TEST_CASE("exec, start, signal, state, resize, close_stdin, pids, stats, delete, attach") {
    auto e = ok({{"id", 2}, {"op", "exec"}, {"container", "c1"}, {"exec", "e1"},
                 {"process", {{"args", {"cat"}}, {"cwd", "/tmp"}}}, {"stdio", {{"stdin", true}}}});
    const auto& x = std::get<Exec>(e.body);
    CHECK(x.exec == "e1");
    CHECK(x.process.cwd == "/tmp");
    CHECK(x.stdio.in);

    CHECK(std::get<Start>(ok({{"id", 3}, {"op", "start"}, {"container", "c1"}, {"exec", ""}}).body).exec.empty());
    CHECK(std::get<Start>(ok({{"id", 3}, {"op", "start"}, {"container", "c1"}}).body).exec.empty());
    const auto sig = std::get<Signal>(ok({{"id", 4}, {"op", "signal"}, {"container", "c1"}, {"exec", "e1"},
                                          {"signal", 15}, {"all", true}}).body);
    CHECK(sig.signal == 15);
    CHECK(sig.all);
    CHECK(std::get<State>(ok({{"id", 5}, {"op", "state"}, {"container", "c1"}, {"exec", "e1"}}).body).exec == "e1");
    const auto rs = std::get<Resize>(ok({{"id", 6}, {"op", "resize"}, {"container", "c1"}, {"width", 80},
                                         {"height", 24}}).body);
    CHECK(rs.width == 80);
    CHECK(rs.height == 24);
    CHECK(std::holds_alternative<CloseStdin>(ok({{"id", 7}, {"op", "close_stdin"}, {"container", "c1"}}).body));
    CHECK(std::get<Pids>(ok({{"id", 8}, {"op", "pids"}, {"container", "c1"}}).body).container == "c1");
    CHECK(std::holds_alternative<Stats>(ok({{"id", 9}, {"op", "stats"}, {"container", "c1"}}).body));
    CHECK_FALSE(std::get<Delete>(ok({{"id", 10}, {"op", "delete"}, {"container", "c1"}}).body).exec.has_value());
    CHECK(std::get<Delete>(ok({{"id", 10}, {"op", "delete"}, {"container", "c1"}, {"exec", "e1"}}).body).exec == "e1");
    auto a = ok({{"op", "attach"}, {"container", "c1"}, {"exec", ""}, {"stream", "stderr"}});
    CHECK(a.id == 0);
    CHECK(std::get<Attach>(a.body).stream == Stream::Stderr);
}

TEST_CASE("ids in requests: no path tricks") {
    for (const std::string& bad : {std::string(), std::string(".."), std::string("a/b"), std::string("../../etc"),
                                   std::string(200, 'x')}) {
        json j = create_req();
        j["container"] = bad;
        auto e = refused(j, "container");
        CHECK(e.id == 7u);  // answered under the request's id
    }
    refused({{"id", 1}, {"op", "exec"}, {"container", "c"}, {"exec", "../e"}, {"process", {{"args", {"x"}}}}}, "exec");
    refused({{"id", 1}, {"op", "exec"}, {"container", "c"}, {"exec", ""}, {"process", {{"args", {"x"}}}}}, "exec");
    refused({{"id", 1}, {"op", "delete"}, {"container", "c"}, {"exec", ""}}, "exec");
    refused({{"id", 1}, {"op", "state"}, {"container", "c"}, {"exec", 5}}, "exec: expected a string");
    refused({{"op", "attach"}, {"container", "c/d"}, {"stream", "stdout"}}, "container");
}

TEST_CASE("wrong types and missing fields name the field") {
    refused({{"op", "ping"}}, "id: missing");
    refused({{"id", -1}, {"op", "ping"}}, "id: expected an unsigned integer");
    refused({{"id", 1.5}, {"op", "ping"}}, "id");
    refused({{"id", "1"}, {"op", "ping"}}, "id");
    refused({{"id", 1}}, "op: missing");
    refused({{"id", 1}, {"op", 3}}, "op: expected a string");
    auto e = refused({{"id", 9}, {"op", "reboot-the-world"}}, "unknown operation");
    CHECK(e.id == 9u);
    refused({{"id", 1}, {"op", "start"}}, "container: missing");
    refused({{"id", 1}, {"op", "start"}, {"container", 5}}, "container: expected a string");
    refused({{"id", 1}, {"op", "signal"}, {"container", "c"}}, "signal: missing");
    refused({{"id", 1}, {"op", "signal"}, {"container", "c"}, {"signal", 0}}, "signal");
    refused({{"id", 1}, {"op", "signal"}, {"container", "c"}, {"signal", 65}}, "signal");
    refused({{"id", 1}, {"op", "signal"}, {"container", "c"}, {"signal", 9}, {"all", "yes"}}, "all");
    refused({{"id", 1}, {"op", "resize"}, {"container", "c"}, {"width", 80}}, "height: missing");
    refused({{"id", 1}, {"op", "resize"}, {"container", "c"}, {"width", 70000}, {"height", 1}}, "width");
    refused({{"op", "attach"}, {"container", "c"}, {"stream", "stdwhat"}}, "stream");
    refused({{"op", "attach"}, {"container", "c"}}, "stream: missing");

    json j = create_req();
    j.erase("spec");
    refused(j, "spec: missing");
    j = create_req();
    j["spec"]["process"]["args"] = json::array();
    refused(j, "spec.process.args");
    j["spec"]["process"]["args"] = {"sh", 5};
    refused(j, "spec.process.args[1]: expected a string");
    j = create_req();
    j["spec"]["process"]["env"] = {"NOEQUALS"};
    refused(j, "spec.process.env[0]");
    j = create_req();
    j["spec"]["process"]["args"] = {std::string("a\0b", 3)};
    refused(j, "NUL");
    j = create_req();
    j["spec"]["process"]["cwd"] = "relative";
    refused(j, "spec.process.cwd");
    j = create_req();
    j["spec"]["process"]["user"] = {{"uid", -5}};
    refused(j, "spec.process.user.uid");
    j = create_req();
    j["spec"]["process"]["user"] = {{"username", "root"}};
    refused(j, "spec.process.user.username");
    j = create_req();
    j["spec"]["process"]["rlimits"] = {{{"type", "RLIMIT_BOGUS"}, {"soft", 1}, {"hard", 1}}};
    refused(j, "spec.process.rlimits[0].type");
    j["spec"]["process"]["rlimits"] = {{{"type", "RLIMIT_NOFILE"}, {"soft", 2}, {"hard", 1}}};
    refused(j, "spec.process.rlimits[0]");
    j = create_req();
    j["spec"]["hostname"] = std::string(65, 'h');
    refused(j, "spec.hostname");
    j = create_req();
    j["stdio"] = {{"stdin", 1}};
    refused(j, "stdio.stdin");
}

TEST_CASE("mounts: unknown types and path tricks refused") {
    json j = create_req();
    j["spec"]["mounts"] = {{{"destination", "/x"}, {"type", "nfs"}, {"source", "h:/x"}}};
    refused(j, "spec.mounts[0].type: unsupported filesystem type \"nfs\"");
    j["spec"]["mounts"] = {{{"destination", "/x/../../etc"}, {"type", "tmpfs"}}};
    refused(j, "spec.mounts[0].destination");
    j["spec"]["mounts"] = {{{"destination", "x"}, {"type", "tmpfs"}}};
    refused(j, "spec.mounts[0].destination: must be an absolute path");
    j["spec"]["mounts"] = {{{"type", "tmpfs"}}};
    refused(j, "spec.mounts[0].destination: missing");
    j["spec"]["mounts"] = {{{"destination", "/x"}, {"type", "bind"}, {"source", "rel"}}};
    refused(j, "spec.mounts[0].source");
    j["spec"]["mounts"] = {{{"destination", "/x"}}};
    refused(j, "spec.mounts[0].type");
    j["spec"]["mounts"] = "not-an-array";
    refused(j, "spec.mounts: expected an array");
}

TEST_CASE("namespaces: user refused, network noted") {
    json j = create_req();
    j["spec"]["linux"] = {{"namespaces", {{{"type", "user"}}}}};
    refused(j, "user namespace is not supported");
    j["spec"]["linux"] = {{"namespaces", {{{"type", "weird"}}}}};
    refused(j, "spec.linux.namespaces[0].type");
    j["spec"]["linux"] = {{"resources", {{"cpu", {{"quota", 1000}, {"period", 10}}}}}};
    refused(j, "spec.linux.resources.cpu.period");
    j["spec"]["linux"] = {{"resources", {{"memory", {{"limit", "lots"}}}}}};
    refused(j, "spec.linux.resources.memory.limit");
}

TEST_CASE("not JSON, not an object, too deep, too big") {
    CHECK(decode_request("{nope").error().message.find("JSON") != std::string::npos);
    CHECK(decode_request("[1,2]").error().message.find("object") != std::string::npos);
    CHECK(decode_request("\"\xff\xfe\"").error().message.find("JSON") != std::string::npos);
    std::string deep = "{\"id\":1,\"op\":\"ping\",\"x\":" + std::string(100, '[') + std::string(100, ']') + "}";
    CHECK(decode_request(deep).error().message.find("nested") != std::string::npos);
    std::string ok_deep = "{\"id\":1,\"op\":\"ping\",\"x\":" + std::string(20, '[') + std::string(20, ']') + "}";
    CHECK(decode_request(ok_deep).has_value());
    // brackets inside strings do not count
    std::string s = "{\"id\":1,\"op\":\"ping\",\"x\":\"" + std::string(200, '[') + "\"}";
    CHECK(decode_request(s).has_value());
    std::string big(kMaxFrame + 1, ' ');
    CHECK(decode_request(big).error().message.find("1 MiB") != std::string::npos);
}

TEST_CASE("network: the JSON guest_network_json gives decodes to binary addresses and routes") {
    json j = {{"id", 3}, {"op", "network"},
              {"interfaces", {{{"name", "eth0"}, {"mac", "0A:58:0a:58:00:05"}, {"mtu", 1450},
                               {"addresses", {"10.88.0.5/24", "fd00::5/64"}},
                               {"routes", {{{"dst", "0.0.0.0/0"}, {"via", "10.88.0.1"}}, {{"dst", "10.88.0.0/24"}},
                                           {{"dst", "::/0"}, {"via", "fd00::1"}}}}}}}};
    auto r = ok(j);
    CHECK(r.id == 3);
    const auto& n = std::get<Network>(r.body);
    REQUIRE(n.interfaces.size() == 1);
    const auto& i = n.interfaces[0];
    CHECK(i.name == "eth0");
    CHECK(i.mac == std::array<uint8_t, 6>{0x0a, 0x58, 0x0a, 0x58, 0x00, 0x05});
    CHECK(i.mtu == 1450);
    REQUIRE(i.addresses.size() == 2);
    CHECK(i.addresses[0].family == AF_INET);
    CHECK(i.addresses[0].prefix_len == 24);
    CHECK(i.addresses[0].addr[0] == 10);
    CHECK(i.addresses[0].addr[3] == 5);
    CHECK(i.addresses[1].family == AF_INET6);
    CHECK(i.addresses[1].prefix_len == 64);
    CHECK(i.addresses[1].addr[0] == 0xfd);
    CHECK(i.addresses[1].addr[15] == 5);
    REQUIRE(i.routes.size() == 3);
    CHECK(i.routes[0].dst.prefix_len == 0);
    REQUIRE(i.routes[0].via);
    CHECK(i.routes[0].via->addr[3] == 1);
    CHECK_FALSE(i.routes[1].via);
    CHECK(i.routes[1].dst.prefix_len == 24);
    CHECK(i.routes[2].dst.family == AF_INET6);
}

TEST_CASE("network: hostile or malformed interfaces are refused by field") {
    auto net = [](json itf) { return json{{"id", 1}, {"op", "network"}, {"interfaces", json::array({itf})}}; };
    json good = {{"mac", "0a:58:0a:58:00:05"}, {"mtu", 1500}};
    ok(net(good));
    refused({{"id", 1}, {"op", "network"}}, "interfaces: missing");
    refused({{"id", 1}, {"op", "network"}, {"interfaces", json::array()}}, "interfaces: empty");
    json many = json::array();
    for (int k = 0; k < 17; ++k) many.push_back(good);
    refused({{"id", 1}, {"op", "network"}, {"interfaces", many}}, "more than 16");
    refused({{"id", 1}, {"op", "network"}, {"interfaces", {good, good}}}, "interfaces[1].mac: given twice");
    auto with = [&](const char* k, json v) {
        json i = good;
        i[k] = std::move(v);
        return net(i);
    };
    refused(with("mac", "0a:58:0a:58:00"), "interfaces[0].mac");
    refused(with("mac", "0a:58:0a:58:00:0g"), "interfaces[0].mac");
    refused(with("mac", "0a-58-0a-58-00-05"), "interfaces[0].mac");
    refused(with("mac", "01:00:5e:00:00:01"), "multicast");
    refused(with("mac", "00:00:00:00:00:00"), "all-zero");
    refused(with("mtu", 67), "interfaces[0].mtu: below 68");
    refused(with("mtu", 65536), "interfaces[0].mtu");
    refused(with("mtu", -1), "interfaces[0].mtu");
    refused(with("name", "a-name-of-16-byt"), "interfaces[0].name");
    refused(with("addresses", {"10.88.0.5"}), "interfaces[0].addresses[0]: expected ADDRESS/PREFIXLEN");
    refused(with("addresses", {"10.88.0.5/33"}), "prefix length above 32");
    refused(with("addresses", {"fd00::5/129"}), "prefix length above 128");
    refused(with("addresses", {"10.88.0.5/"}), "prefix length must be a number");
    refused(with("addresses", {"10.88.0.5/+8"}), "prefix length must be a number");
    refused(with("addresses", {"10.88.0.5/0024"}), "prefix length must be a number");
    refused(with("addresses", {"10.88.0.256/24"}), "not an IPv4 or IPv6 address");
    refused(with("addresses", {"fe80::1%eth0/64"}), "not an IPv4 or IPv6 address");
    refused(with("addresses", {std::string("10.88.0.5\0/24", 13)}), "NUL");
    refused(with("addresses", json::array({5})), "expected a string");
    refused(with("addresses", json(std::vector<std::string>(65, "10.0.0.1/8"))), "more than 64");
    refused(with("routes", {{{"dst", "10.88.0.1/24"}}}), "interfaces[0].routes[0].dst: host bits set");
    refused(with("routes", {{{"dst", "10.88.0.0/24"}, {"via", "fd00::1"}}}), "routes[0].via: not of the destination");
    refused(with("routes", {{{"dst", "0.0.0.0/0"}, {"via", "10.88.0.1/32"}}}), "routes[0].via: not an IPv4");
    refused(with("routes", {{{"via", "10.88.0.1"}}}), "routes[0].dst: missing");
    refused(with("routes", {"0.0.0.0/0"}), "routes[0]: expected an object");
    json nomac = {{"mtu", 1500}};
    refused(net(nomac), "interfaces[0].mac: missing");
    json nomtu = {{"mac", "0a:58:0a:58:00:05"}};
    refused(net(nomtu), "interfaces[0].mtu: missing");
}
