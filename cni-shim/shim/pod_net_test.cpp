// The pod network from the shim's side: the netns path of an OCI spec, and PodNet with the
// real CNI plugins, the real tc/taps (cni-shim/net) and the real kestrel-agent, whose
// `network` request configures a stand-in guest namespace (a veth given the pod veth's MAC).
// No VM: the virtio-net data path is the nested case pod-ctr-net's.
#include "cni-shim/shim/pod_net.hpp"

#include <fcntl.h>
#include <sched.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <thread>

#include <doctest/doctest.h>

#include "cni-shim/net/cni_test_env.hpp"
#include "cni-shim/shim/agent_client.hpp"
#include "cni-shim/ttrpc/unix_socket.hpp"

using namespace kestrel;
using namespace kestrel::shim;
using nlohmann::json;
namespace ct = kestrel::cninet::test;

namespace {

json spec_with(json namespaces) { return json{{"linux", {{"namespaces", std::move(namespaces)}}}}; }

template <class R>
std::string error_of(const R& r) {
    if constexpr (std::is_same_v<typename R::error_type, std::string>) return r ? std::string() : r.error();
    else return r ? std::string() : r.error().what();
}

#define REQUIRE_OK(expr)                                             \
    ({                                                               \
        auto&& r_ = (expr);                                          \
        REQUIRE_MESSAGE(r_.has_value(), error_of(r_));               \
        std::move(r_).value();                                       \
    })

}  // namespace

TEST_CASE("spec_netns_path: the network namespace path of an OCI spec, checked") {
    CHECK(spec_netns_path(json::object()).value() == std::nullopt);
    CHECK(spec_netns_path(spec_with({{{"type", "pid"}}, {{"type", "network"}}})).value() == std::nullopt);
    CHECK(spec_netns_path(spec_with({{{"type", "network"}, {"path", ""}}})).value() == std::nullopt);
    CHECK(spec_netns_path(spec_with({{{"type", "ipc"}, {"path", "/proc/1/ns/ipc"}},
                                     {{"type", "network"}, {"path", "/var/run/netns/cni-1234"}}}))
              .value() == "/var/run/netns/cni-1234");
    auto refused = [](json spec, const std::string& what) {
        auto r = spec_netns_path(spec);
        INFO(spec.dump().substr(0, 120));
        REQUIRE_FALSE(r);
        CHECK(r.error().kind == ErrorKind::BadRequest);
        CHECK_MESSAGE(r.error().message.find(what) != std::string::npos, r.error().message);
    };
    refused(spec_with({{{"type", "network"}, {"path", "netns/x"}}}), "linux.namespaces[0].path");
    refused(spec_with({{{"type", "network"}, {"path", "/run/netns/../../etc/passwd"}}}), "'..'");
    refused(spec_with({{{"type", "network"}, {"path", std::string("/run/netns/a\0b", 14)}}}), "absolute path");
    refused(spec_with({{{"type", "network"}, {"path", "/" + std::string(4095, 'a')}}}), "4095");
    refused(spec_with({{{"type", "network"}, {"path", 7}}}), "expected a string");
    refused(spec_with({{{"type", "network"}}, {{"type", "network"}, {"path", "/run/netns/x"}}}), "second network");
    refused(spec_with(json::object()), "linux.namespaces: expected an array");
    refused(spec_with({"network"}), "linux.namespaces[0]: expected an object");
}

TEST_CASE("PodNet and the real agent: the guest gets the veth's MAC, MTU, addresses and routes; nothing left after") {
    REQUIRE_OK(ct::check_privileges());
    const char* agent = std::getenv("KESTREL_AGENT_BIN");
    REQUIRE_MESSAGE(agent, "KESTREL_AGENT_BIN not set (meson sets it)");
    const std::string tag = std::to_string(::getpid());
    ct::TempDir dir;
    auto node = REQUIRE_OK(ct::NamedNetns::create("kpn-node-" + tag));
    auto pod = REQUIRE_OK(ct::NamedNetns::create("kpn-pod-" + tag));
    auto guest = REQUIRE_OK(ct::NamedNetns::create("kpn-guest-" + tag));
    ct::CniNetwork cni(node, "kpnbr0", "10.88.41", true, dir.path(), 1400, "fd00:88:41:");
    REQUIRE_OK(cni.add("kpn" + tag, pod.path(), "eth0"));
    const std::string veth_mac = ct::sh("ip -n " + pod.name() + " -o link show eth0 | sed -n 's/.*link\\/ether \\([0-9a-f:]*\\) .*/\\1/p'").out;
    const std::string pod_v4 = ct::sh("ip -n " + pod.name() + " -4 -o addr show dev eth0 | sed -n 's/.* inet \\([0-9./]*\\) .*/\\1/p'").out;
    REQUIRE(veth_mac.size() == 18);  // with its newline
    REQUIRE(!pod_v4.empty());

    auto net = REQUIRE_OK(PodNet::attach(pod.path()));
    auto nets = net->vm_nets();
    REQUIRE(nets.size() == 1);
    CHECK(nets[0].mac + "\n" == veth_mac);
    CHECK(nets[0].id == "net0");
    CHECK(nets[0].fd >= 0);
    CHECK((::fcntl(nets[0].fd, F_GETFD) & FD_CLOEXEC) != 0);  // only kestrel's fork clears it
    CHECK(pod.ip("-o link show").out.find("tap0_kestrel") != std::string::npos);

    // The stand-in guest: one Ethernet link carrying the veth's MAC (as kestrel's virtio-net
    // would), MTU 1500, down, under a name the agent changes to the pod's (eth0).
    REQUIRE_OK(ct::sh_ok("ip -n " + guest.name() + " link add eth7 address " + nets[0].mac + " type veth peer name eth7p"));
    REQUIRE_OK(ct::sh_ok("ip -n " + guest.name() + " link set lo down"));
    std::string sock = dir.path() + "/agent.sock";
    pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        int ns = ::open(guest.path().c_str(), O_RDONLY | O_CLOEXEC);
        if (ns < 0 || ::setns(ns, CLONE_NEWNET) != 0) ::_exit(126);
        ::execl(agent, agent, "--listen", ("unix:" + sock).c_str(), "--state-dir", (dir.path() + "/state").c_str(),
                "--cgroup-root", (dir.path() + "/nocgroup/x").c_str(), static_cast<char*>(nullptr));
        ::_exit(127);
    }
    Result<UniqueFd> fd = fail("not yet");
    for (int i = 0; i < 100 && !fd; ++i) {
        fd = ttrpc::connect_unix(sock, std::chrono::milliseconds(100));
        if (!fd) std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    REQUIRE(fd);
    auto client = REQUIRE_OK(AgentClient::open(std::move(*fd), [](AgentExit) {}));
    json req = net->agent_request();
    CHECK(req["op"] == "network");
    auto applied = client->call(req);
    REQUIRE_MESSAGE(applied, applied.error().what());
    // Asked again (a retried request): the same state, no error.
    auto again = client->call(req);
    CHECK_MESSAGE(again, again.error().what());

    // The guest's link takes the pod's interface name.
    CHECK(guest.ip("-o link show eth7").status != 0);
    auto link = guest.ip("-o link show eth0").out;
    CHECK_MESSAGE(link.find("mtu 1400") != std::string::npos, link);
    CHECK_MESSAGE(link.find(",UP") != std::string::npos, link);
    CHECK(guest.ip("-o link show lo").out.find(",UP") != std::string::npos);
    auto addrs = guest.ip("-o addr show dev eth0").out;
    CHECK_MESSAGE(addrs.find("inet " + pod_v4.substr(0, pod_v4.size() - 1) + " ") != std::string::npos, addrs);
    CHECK_MESSAGE(addrs.find("inet6 fd00:88:41::") != std::string::npos, addrs);
    auto routes4 = guest.ip("-4 route show").out;
    CHECK_MESSAGE(routes4.find("default via 10.88.41.1 dev eth0") != std::string::npos, routes4);
    CHECK_MESSAGE(routes4.find("10.88.41.0/24 dev eth0") != std::string::npos, routes4);
    auto routes6 = guest.ip("-6 route show").out;
    CHECK_MESSAGE(routes6.find("default via fd00:88:41::1 dev eth0") != std::string::npos, routes6);

    // A MAC the guest does not have: refused, naming it and the links it has.
    json wrong = req;
    wrong["interfaces"][0]["mac"] = "0a:58:00:00:00:01";
    auto refused = client->call(wrong);
    REQUIRE_FALSE(refused);
    CHECK_MESSAGE(refused.error().message.find("interfaces[0] (eth0, 0a:58:00:00:00:01): no guest network interface has this MAC") !=
                      std::string::npos,
                  refused.error().message);
    CHECK_MESSAGE(refused.error().message.find("eth0 " + nets[0].mac) != std::string::npos, refused.error().message);
    // Hostile: decoded and refused before any netlink.
    wrong["interfaces"][0]["mac"] = "ff:ff:ff:ff:ff:ff";
    auto multicast = client->call(wrong);
    REQUIRE_FALSE(multicast);
    CHECK(multicast.error().message.find("multicast") != std::string::npos);

    CHECK(client->call(json{{"op", "shutdown"}}));
    int st = 0;
    ::waitpid(pid, &st, 0);
    CHECK(WIFEXITED(st));

    net.reset();  // the shim's teardown: taps closed, our filters and qdiscs removed
    CHECK(pod.ip("-o link show").out.find("kestrel") == std::string::npos);
    CHECK(pod.exec("tc qdisc show dev eth0").out.find("ingress") == std::string::npos);
    CHECK(pod.ip("-o link show eth0").status == 0);  // the CNI's veth stays
}
