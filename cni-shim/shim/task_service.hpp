// containerd.task.v2.Task for one pod (runtime/v2/task/shim.proto): the pod's VM, its
// containers and their processes, driven through kestrel-agent. Every call is answered from
// a thread of its own (ttrpc::Server), so Wait may block while others proceed.
#pragma once

#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "cni-shim/shim/agent_client.hpp"
#include "cni-shim/shim/events.hpp"
#include "cni-shim/shim/pod_vm.hpp"
#include "cni-shim/shim/stdio.hpp"
#include "cni-shim/ttrpc/server.hpp"

namespace kestrel::shim {

struct ShimIdentity {
    std::string ns;          // -namespace
    std::string group;       // the pod: sandbox id or the first container's id
    std::string state_dir;   // pod_state_dir()
    std::string socket_path; // where this shim listens
};

class TaskService {
public:
    TaskService(ShimIdentity id, PodVmConfig vm_cfg, std::unique_ptr<EventPublisher> events,
                std::function<void()> request_exit);
    ~TaskService();

    // Registers every Task method on `server`.
    void register_on(ttrpc::Server& server);

    // Kills the VM (if any): for the shim's exit.
    void stop_vm();
    void drain_events(std::chrono::milliseconds timeout) { events_->drain(timeout); }

private:
    struct Proc;
    struct Container;
    using Reply = std::expected<std::string, ttrpc::Status>;

    Reply create(std::string_view payload);
    Reply start(std::string_view payload);
    Reply state(std::string_view payload);
    Reply wait(const ttrpc::CallContext& ctx, std::string_view payload);
    Reply kill(std::string_view payload);
    Reply remove(std::string_view payload);
    Reply exec(std::string_view payload);
    Reply resize_pty(std::string_view payload);
    Reply close_io(std::string_view payload);
    Reply pids(std::string_view payload);
    Reply stats(std::string_view payload);
    Reply connect(std::string_view payload);
    Reply shutdown(std::string_view payload);
    Reply pause_resume(std::string_view payload, bool pause);

    // Boots the pod VM at the first Create, with a NIC per interface of the network
    // namespace `config` (the sandbox's OCI spec) names.
    Result<void> ensure_vm(const nlohmann::json& config);
    void drop_pod_network();
    Result<std::unique_ptr<ProcessIo>> attach_stdio(const std::string& container, const std::string& exec,
                                                    const StdioPaths& paths);
    void on_agent_exit(AgentExit e);
    void on_vm_exit();
    std::shared_ptr<Proc> find_proc(const std::string& id, const std::string& exec);
    // A host block volume's drive in the pod VM (its guest device), attached at its first
    // user and shared by every container of the pod that names it; released by the last.
    Result<std::string> attach_volume(const std::string& host_path, bool writable);
    void release_volume(const std::string& host_path);
    // The agent to ask about container `id`: NotFound without the container,
    // FailedPrecondition without a running pod VM.
    std::expected<std::shared_ptr<AgentClient>, ttrpc::Status> container_agent(const std::string& id);

    ShimIdentity id_;
    PodVmConfig vm_cfg_;
    std::unique_ptr<EventPublisher> events_;
    std::function<void()> request_exit_;

    std::mutex vm_mu_;  // VM boot and teardown
    std::unique_ptr<PodVm> vm_;
    struct Volume {
        int slot = -1;
        std::string device;  // guest path
        int users = 0;
        bool writable = false;
    };
    std::map<std::string, Volume> volumes_;  // by host block device; under vm_mu_
    std::shared_ptr<AgentClient> agent_;
    std::mutex net_mu_;  // not vm_mu_: on_vm_exit drops the network from kestrel's monitor thread
    std::unique_ptr<PodNet> net_;

    std::mutex mu_;  // the tables below
    std::condition_variable_any cv_;
    std::map<std::string, std::shared_ptr<Container>> containers_;
    bool paused_ = false;
    bool vm_dead_ = false;
};

}  // namespace kestrel::shim
