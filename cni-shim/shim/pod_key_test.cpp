#include "cni-shim/shim/pod_key.hpp"

#include <sys/un.h>

#include <doctest/doctest.h>

using namespace kestrel::shim;
using nlohmann::json;

TEST_CASE("valid_identifier follows containerd's identifier rule") {
    CHECK(valid_identifier("a"));
    CHECK(valid_identifier("k8s.io"));
    CHECK(valid_identifier("default"));
    CHECK(valid_identifier(std::string(64, 'f')));
    CHECK(valid_identifier("my_ctr-1.2"));
    CHECK_FALSE(valid_identifier(""));
    CHECK_FALSE(valid_identifier(std::string(77, 'a')));
    CHECK_FALSE(valid_identifier(".."));
    CHECK_FALSE(valid_identifier("a/b"));
    CHECK_FALSE(valid_identifier("-a"));
    CHECK_FALSE(valid_identifier("a-"));
    CHECK_FALSE(valid_identifier("a..b"));
    CHECK_FALSE(valid_identifier("a b"));
    CHECK_FALSE(valid_identifier(std::string("a\0b", 3)));
}

TEST_CASE("pod_membership groups CRI containers by their sandbox id") {
    std::string sb(64, 'a'), ctr(64, 'b');
    SUBCASE("no annotations: a pod of its own (ctr run)") {
        auto m = pod_membership(json{{"ociVersion", "1.0.2"}}, "ctr1");
        REQUIRE(m);
        CHECK(m->group == "ctr1");
        CHECK(m->is_sandbox);
    }
    SUBCASE("the sandbox container") {
        auto m = pod_membership(json{{"annotations", {{"io.kubernetes.cri.sandbox-id", sb}, {"io.kubernetes.cri.container-type", "sandbox"}}}}, sb);
        REQUIRE(m);
        CHECK(m->group == sb);
        CHECK(m->is_sandbox);
    }
    SUBCASE("a container of the sandbox") {
        auto m = pod_membership(json{{"annotations", {{"io.kubernetes.cri.sandbox-id", sb}, {"io.kubernetes.cri.container-type", "container"}}}}, ctr);
        REQUIRE(m);
        CHECK(m->group == sb);
        CHECK_FALSE(m->is_sandbox);
    }
    SUBCASE("hostile annotations are refused") {
        CHECK_FALSE(pod_membership(json{{"annotations", {{"io.kubernetes.cri.sandbox-id", "../../etc"}}}}, ctr));
        CHECK_FALSE(pod_membership(json{{"annotations", {{"io.kubernetes.cri.sandbox-id", 5}}}}, ctr));
        CHECK_FALSE(pod_membership(json{{"annotations", "x"}}, ctr));
        CHECK_FALSE(pod_membership(json::array(), ctr));
        CHECK_FALSE(pod_membership(json::object(), "bad/id"));
        // a "container" claiming to be its own sandbox, or a sandbox naming another
        CHECK_FALSE(pod_membership(json{{"annotations", {{"io.kubernetes.cri.sandbox-id", ctr}, {"io.kubernetes.cri.container-type", "container"}}}}, ctr));
        auto e = pod_membership(json{{"annotations", {{"io.kubernetes.cri.sandbox-id", sb}, {"io.kubernetes.cri.container-type", "sandbox"}}}}, ctr);
        REQUIRE_FALSE(e);
        CHECK(e.error().message.find("disagree") != std::string::npos);
    }
}

TEST_CASE("pod_key is stable per (address, namespace, group) and the paths fit sun_path") {
    auto k = pod_key("/run/containerd/containerd.sock", "k8s.io", std::string(64, 'a'));
    CHECK(k.size() == 16);
    CHECK(k == pod_key("/run/containerd/containerd.sock", "k8s.io", std::string(64, 'a')));
    CHECK(k != pod_key("/run/containerd/containerd.sock", "default", std::string(64, 'a')));
    CHECK(k != pod_key("/tmp/c/containerd.sock", "k8s.io", std::string(64, 'a')));
    // the separators keep ("ab","c") and ("a","bc") apart
    CHECK(pod_key("x", "ab", "c") != pod_key("x", "a", "bc"));
    std::string sock = shim_socket_path(kDefaultSocketDir, k);
    CHECK(sock == "/run/containerd/s/kestrel-" + k + ".sock");
    CHECK(sock.size() < sizeof(sockaddr_un{}.sun_path));
    // the VM's vsock socket plus the "_<port>" kestrel appends for guest connections
    std::string vsock = pod_state_dir(kDefaultStateRoot, k) + "/vsock.sock_4294967295";
    CHECK(vsock.size() < sizeof(sockaddr_un{}.sun_path));
}

TEST_CASE("clean_absolute_path: absolute, no '..' component, no NUL, bounded") {
    CHECK(clean_absolute_path("/run/x/out"));
    CHECK(clean_absolute_path("/a/..b/c"));  // a name starting with "..", not a component
    CHECK_FALSE(clean_absolute_path(""));
    CHECK_FALSE(clean_absolute_path("relative"));
    CHECK_FALSE(clean_absolute_path("/a/../etc"));
    CHECK_FALSE(clean_absolute_path("/a/.."));
    CHECK_FALSE(clean_absolute_path(std::string_view("/a\0b", 4)));
    CHECK_FALSE(clean_absolute_path("/" + std::string(4095, 'a')));
    CHECK_FALSE(clean_absolute_path("/abcd", 4));
}
