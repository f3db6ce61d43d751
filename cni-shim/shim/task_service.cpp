#include "cni-shim/shim/task_service.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <future>
#include <optional>
#include <thread>

#include <spdlog/spdlog.h>

#include "cni-shim/proto/events_task.pb.h"
#include "cni-shim/proto/shim.pb.h"
#include "cni-shim/shim/metrics.hpp"
#include "cni-shim/shim/pod_key.hpp"
#include "cni-shim/shim/rootfs.hpp"
#include "cni-shim/shim/spec_mounts.hpp"
#include "cni-shim/ttrpc/unix_socket.hpp"

namespace kestrel::shim {

using nlohmann::json;
using ttrpc::Code;
namespace task = containerd::task::v2;
namespace ev = containerd::events;
namespace types = containerd::v1::types;

enum class ProcState { Created, Running, Stopped };

struct TaskService::Proc {
    std::string exec;  // "" for the container's init
    StdioPaths stdio;
    std::uint32_t pid = 0;
    ProcState state = ProcState::Created;
    std::uint32_t exit_status = 0;
    std::int64_t exited_at_ns = 0;
    std::unique_ptr<ProcessIo> io;
};

struct TaskService::Container {
    std::string id, bundle;
    std::vector<RootfsMount> rootfs;
    int slot = -1;
    std::string image;
    bool image_shared = false;  // from the per-image cache: never removed with the container
    std::vector<std::string> volumes;  // host block devices it holds (attach_volume)
    std::shared_ptr<Proc> init = std::make_shared<Proc>();
    std::map<std::string, std::shared_ptr<Proc>> execs;
};

namespace {

constexpr const char* kService = "containerd.task.v2.Task";

std::unexpected<ttrpc::Status> status(Code c, std::string msg) {
    spdlog::info("answer {}: {}", static_cast<int>(c), msg);
    return std::unexpected(ttrpc::Status{c, std::move(msg)});
}

// Error kinds to codes containerd's errdefs understands (errdefs/grpc.go).
std::unexpected<ttrpc::Status> status(const Error& e) {
    Code c = e.kind == ErrorKind::BadRequest ? Code::InvalidArgument
           : e.kind == ErrorKind::NotAllowed ? Code::FailedPrecondition
                                             : Code::Internal;
    return status(c, e.what());
}

template <class M>
std::expected<M, ttrpc::Status> parse(std::string_view payload) {
    M m;
    if (!m.ParseFromArray(payload.data(), static_cast<int>(payload.size()))) {
        return status(Code::InvalidArgument, fmt::format("{}: malformed protobuf", M::descriptor()->name()));
    }
    return m;
}

void set_ts(google::protobuf::Timestamp* ts, std::int64_t ns) {
    ts->set_seconds(ns / 1'000'000'000);
    ts->set_nanos(static_cast<std::int32_t>(ns % 1'000'000'000));
}

std::expected<void, ttrpc::Status> check_id(std::string_view what, std::string_view id, bool may_be_empty = false) {
    if (may_be_empty && id.empty()) return {};
    if (!valid_identifier(id)) return status(Code::InvalidArgument, fmt::format("{} '{}' is not a valid identifier", what, id.substr(0, 80)));
    return {};
}

json stdio_json(const StdioPaths& p) {
    return json{{"stdin", !p.in.empty()}, {"stdout", !p.out.empty()}, {"stderr", !p.err.empty() && !p.terminal},
                {"terminal", p.terminal}};
}

#define TRY_STATUS(expr)                                                  \
    ({                                                                    \
        auto&& r_ = (expr);                                               \
        if (!r_) return std::unexpected(std::move(r_).error());           \
        std::move(r_).value();                                            \
    })
#define TRY_RESULT(expr)                                                  \
    ({                                                                    \
        auto&& r_ = (expr);                                               \
        if (!r_) return status(r_.error());                               \
        std::move(r_).value();                                            \
    })

}  // namespace

TaskService::TaskService(ShimIdentity id, PodVmConfig vm_cfg, std::unique_ptr<EventPublisher> events,
                         std::function<void()> request_exit)
    : id_(std::move(id)), vm_cfg_(std::move(vm_cfg)), events_(std::move(events)), request_exit_(std::move(request_exit)) {}

TaskService::~TaskService() { stop_vm(); }

void TaskService::register_on(ttrpc::Server& server) {
    auto reg = [&](const char* method, auto fn) {
        server.register_method(kService, method, [fn, method](const ttrpc::CallContext& ctx, std::string_view p) -> Reply {
            spdlog::info("{} ({} bytes)", method, p.size());
            // Last line of defence: a library throwing on odd input (nlohmann, protobuf,
            // std) fails this call, not the shim and with it every container of the pod.
            try {
                return fn(ctx, p);
            } catch (const std::exception& e) {
                return status(Code::Internal, fmt::format("{}: {}", method, e.what()));
            }
        });
    };
    reg("Create", [this](auto&, auto p) { return create(p); });
    reg("Start", [this](auto&, auto p) { return start(p); });
    reg("State", [this](auto&, auto p) { return state(p); });
    reg("Wait", [this](auto& c, auto p) { return wait(c, p); });
    reg("Kill", [this](auto&, auto p) { return kill(p); });
    reg("Delete", [this](auto&, auto p) { return remove(p); });
    reg("Exec", [this](auto&, auto p) { return exec(p); });
    reg("ResizePty", [this](auto&, auto p) { return resize_pty(p); });
    reg("CloseIO", [this](auto&, auto p) { return close_io(p); });
    reg("Pids", [this](auto&, auto p) { return pids(p); });
    reg("Stats", [this](auto&, auto p) { return stats(p); });
    reg("Connect", [this](auto&, auto p) { return connect(p); });
    reg("Shutdown", [this](auto&, auto p) { return shutdown(p); });
    reg("Pause", [this](auto&, auto p) { return pause_resume(p, true); });
    reg("Resume", [this](auto&, auto p) { return pause_resume(p, false); });
    reg("Update", [](auto&, auto) -> Reply { return status(Code::Unimplemented, "Update: resources of a running kestrel pod cannot change yet"); });
    reg("Checkpoint", [](auto&, auto) -> Reply { return status(Code::Unimplemented, "Checkpoint: not supported by the kestrel shim"); });
}

Result<void> TaskService::ensure_vm(const json& config) {
    std::lock_guard lk(vm_mu_);
    {
        std::lock_guard l2(mu_);
        if (vm_dead_) return not_allowed("the pod VM has ended");
    }
    if (vm_) return {};
    std::unique_ptr<PodNet> net;
    if (auto netns = TRY(spec_netns_path(config))) net = TRY(PodNet::attach(*netns));
    // The first Create is the sandbox's: its spec carries the pod's resources.
    PodVmConfig cfg = vm_cfg_;
    auto size = TRY(size_pod_vm(cfg, config));
    for (const auto& n : size.notes) spdlog::warn("pod VM size: {}", n);
    cfg.vcpus = size.vcpus;
    cfg.memory_mib = size.memory_mib;
    spdlog::info("booting the pod VM (kernel {}, initrd {}, {} vCPUs, {} MiB, {} NICs)", cfg.kernel, cfg.initrd,
                 cfg.vcpus, cfg.memory_mib, net ? net->vm_nets().size() : 0);
    auto vm = TRY(PodVm::boot(cfg, id_.state_dir, [this](int) { on_vm_exit(); }, net ? net->vm_nets() : std::vector<PodVmNet>{}));
    // The agent listens once the guest has booted: retry the handshake until boot_timeout.
    auto until = std::chrono::steady_clock::now() + vm_cfg_.boot_timeout;
    std::string last;
    for (;;) {
        auto fd = vsock_connect(vm->vsock_path(), vm->agent_port(), std::chrono::seconds(5));
        if (fd) {
            auto agent = TRY(AgentClient::open(std::move(*fd), [this](AgentExit e) { on_agent_exit(std::move(e)); }));
            auto pong = agent->call(json{{"op", "ping"}}, std::chrono::seconds(10));
            if (pong) {
                spdlog::info("agent answered ping: {}", pong->dump());
                std::lock_guard l2(mu_);
                agent_ = std::move(agent);
                break;
            }
            last = pong.error().what();
        } else {
            last = fd.error().what();
        }
        {
            std::lock_guard l2(mu_);
            if (vm_dead_) return fail("the pod VM ended during boot (see {}/console.log and kestrel.log)", id_.state_dir);
        }
        if (std::chrono::steady_clock::now() > until) {
            return fail("the pod VM's agent did not answer within {} s: {} (see {}/console.log)", vm_cfg_.boot_timeout.count(), last, id_.state_dir);
        }
        ::usleep(50'000);  // a refused connect costs the guest one RST: poll often
    }
    if (net) {
        std::shared_ptr<AgentClient> agent;
        {
            std::lock_guard l2(mu_);
            agent = agent_;
        }
        auto applied = agent->call(net->agent_request(), std::chrono::seconds(30));
        if (!applied) {
            // `vm` and `net` go out of scope: kestrel is killed, the taps and filters removed.
            std::lock_guard l2(mu_);
            agent_.reset();
            return fail("the guest agent could not configure the pod network of {}: {}", net->netns(), applied.error().what());
        }
        spdlog::info("guest network configured: {}", net->agent_request().dump());
        std::lock_guard nl(net_mu_);
        net_ = std::move(net);
    }
    vm_ = std::move(vm);
    return {};
}

void TaskService::drop_pod_network() {
    std::unique_ptr<PodNet> net;
    {
        std::lock_guard nl(net_mu_);
        net = std::move(net_);
    }
    net.reset();  // closes the taps and removes our filters and qdiscs (pod_net.hpp)
}

Result<std::unique_ptr<ProcessIo>> TaskService::attach_stdio(const std::string& container, const std::string& exec,
                                                             const StdioPaths& paths) {
    auto io = std::make_unique<ProcessIo>();
    auto attach = [&](const char* stream) -> Result<UniqueFd> {
        UniqueFd fd = TRY(vsock_connect(vm_->vsock_path(), vm_->agent_port(), std::chrono::seconds(10)));
        TRY(ttrpc::write_all(fd.get(), encode_agent_frame(json{{"op", "attach"}, {"container", container}, {"exec", exec}, {"stream", stream}})));
        json answer = TRY(read_agent_frame(fd.get()));
        if (!json_true(answer, "ok")) return fail("agent attach {}: {}", stream, answer.dump().substr(0, 300));
        return fd;
    };
    // stdout and stderr: FIFOs, a file, or a logging program (stdio.hpp OutputUri).
    const bool want_err = !paths.err.empty() && !paths.terminal;
    UniqueFd out, err;
    std::optional<OutputUri> out_uri, err_uri;
    if (!paths.out.empty()) out_uri = TRY(parse_output_uri(paths.out, "stdout"));
    if (want_err) err_uri = TRY(parse_output_uri(paths.err, "stderr"));
    auto open_sink = [](const OutputUri& uri) -> Result<UniqueFd> {
        if (uri.kind == OutputUri::Kind::Fifo) return open_fifo_writer(uri.path, std::chrono::seconds(10));
        std::error_code ec;
        std::filesystem::create_directories(std::filesystem::path(uri.path).parent_path(), ec);
        UniqueFd fd(::open(uri.path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644));
        if (!fd) return fail_errno("open log file {}", uri.path);
        return fd;
    };
    if (out_uri && out_uri->kind == OutputUri::Kind::Binary) {
        if (err_uri && (err_uri->kind != OutputUri::Kind::Binary || err_uri->path != out_uri->path))
            return bad_request("stderr: a logging program takes both streams (stderr must name the same binary:// as stdout)");
        auto [o, e] = TRY(io->start_logger(*out_uri, container, id_.ns));
        out = std::move(o);
        if (want_err) err = std::move(e);  // else its fd 4 sees EOF at once
    } else if (err_uri && err_uri->kind == OutputUri::Kind::Binary) {
        return bad_request("stdout: a logging program takes both streams (stdout must name the same binary:// as stderr)");
    } else {
        if (out_uri) out = TRY(open_sink(*out_uri));
        if (err_uri && err_uri->kind == OutputUri::Kind::File && out_uri && out_uri->kind == OutputUri::Kind::File &&
            err_uri->path == out_uri->path) {
            err = UniqueFd(::fcntl(out.get(), F_DUPFD_CLOEXEC, 0));  // one file for both, as containerd's shims do
            if (!err) return fail_errno("dup the log file");
        } else if (err_uri) {
            err = TRY(open_sink(*err_uri));
        }
    }
    if (out) io->add_output(TRY(attach("stdout")), std::move(out));
    if (err) io->add_output(TRY(attach("stderr")), std::move(err));
    if (!paths.in.empty()) {
        UniqueFd fifo = TRY(open_fifo_reader(paths.in));
        TRY(io->add_stdin(std::move(fifo), TRY(attach("stdin"))));
    }
    return io;
}

std::shared_ptr<TaskService::Proc> TaskService::find_proc(const std::string& id, const std::string& exec) {
    auto c = containers_.find(id);
    if (c == containers_.end()) return nullptr;
    if (exec.empty()) return c->second->init;
    auto e = c->second->execs.find(exec);
    return e == c->second->execs.end() ? nullptr : e->second;
}

TaskService::Reply TaskService::create(std::string_view payload) {
    auto req = TRY_STATUS(parse<task::CreateTaskRequest>(payload));
    TRY_STATUS(check_id("id", req.id()));
    if (!req.checkpoint().empty() || !req.parent_checkpoint().empty()) return status(Code::Unimplemented, "checkpoint/restore is not supported by the kestrel shim");
    const std::string& bundle = req.bundle();
    if (!clean_absolute_path(bundle, 4000)) {
        return status(Code::InvalidArgument, "bundle must be an absolute path without '..'");
    }
    json config = TRY_RESULT(read_bundle_config(bundle));
    PodMembership m = TRY_RESULT(pod_membership(config, req.id()));
    auto mounts = guest_mounts(config);
    for (const auto& change : mounts.changes) spdlog::info("container {}: {}", req.id(), change);
    if (!mounts.unsupported.empty()) {
        std::string why = mounts.unsupported.front();
        if (mounts.unsupported.size() > 1) why += fmt::format(" (and {} more, in the shim's log)", mounts.unsupported.size() - 1);
        return status(Code::InvalidArgument, fmt::format("container {}: {}", req.id(), why));
    }
    if (m.group != id_.group) {
        return status(Code::InvalidArgument, fmt::format("container {} belongs to pod {}, this shim serves pod {}", req.id(), m.group, id_.group));
    }
    if (req.rootfs_size() > 64) return status(Code::InvalidArgument, fmt::format("{} rootfs mounts, more than 64", req.rootfs_size()));
    // Block volumes (volumeDevices): checked before anything is built, attached below.
    std::vector<std::pair<BlockDevice, std::string>> block_volumes;
    for (auto& d : TRY_RESULT(block_devices(config))) {
        std::string host = TRY_RESULT(host_block_device(d.major, d.minor));
        block_volumes.emplace_back(std::move(d), std::move(host));
    }
    StdioPaths paths{req.stdin(), req.stdout(), req.stderr(), req.terminal()};
    if (paths.terminal) paths.err.clear();  // one pty for all three (containerd still names a stderr FIFO)
    TRY_RESULT(check_stdio_paths(paths));

    auto c = std::make_shared<Container>();
    c->id = req.id();
    c->bundle = bundle;
    c->init->stdio = paths;
    for (const auto& mnt : req.rootfs()) c->rootfs.push_back({mnt.type(), mnt.source(), mnt.target(), {mnt.options().begin(), mnt.options().end()}});
    {
        std::lock_guard lk(mu_);
        if (containers_.contains(c->id)) return status(Code::AlreadyExists, fmt::format("container {} already exists", c->id));
        containers_[c->id] = c;  // reserved: a concurrent Create of the same id fails
    }
    auto undo = [&](const Error& e) {
        std::lock_guard lk(mu_);
        containers_.erase(c->id);
        return status(e);
    };

    // The rootfs: mounted on <bundle>/rootfs unless containerd gave no mounts (then the
    // bundle's root.path already holds the tree), copied into an ext4 image. Made while the
    // pod VM boots (the first Create), so a new image's mke2fs and the guest's boot overlap.
    std::string root_dir = bundle + "/rootfs";
    if (c->rootfs.empty() && config.contains("root") && config["root"].is_object() && config["root"].contains("path") &&
        config["root"]["path"].is_string()) {
        std::string p = config["root"]["path"];
        root_dir = !p.empty() && p.front() == '/' ? p : bundle + "/" + p;
    }
    ::mkdir(root_dir.c_str(), 0755);
    auto prepare_image = [&]() -> Result<void> {  // reads no `config`: ensure_vm has it meanwhile
        auto cacheable = vm_cfg_.image_cache_dir.empty() ? std::nullopt : cacheable_rootfs(c->rootfs);
        if (cacheable) {
            auto img = cached_image(*cacheable, vm_cfg_.image_cache_dir, root_dir);
            if (!img) return std::unexpected(context(img.error(), "rootfs image"));
            auto pruned = prune_image_cache(vm_cfg_.image_cache_dir, vm_cfg_.image_cache_keep, *img);
            if (pruned.removed > 0) {
                spdlog::info("image cache {}: removed {} image(s) unused for {} s ({} bytes); {} as old kept, in use",
                             vm_cfg_.image_cache_dir, pruned.removed, vm_cfg_.image_cache_keep.count(), pruned.removed_bytes,
                             pruned.kept_in_use);
            }
            for (const auto& p : pruned.problems) spdlog::warn("image cache: {}", p);
            bool in_use = false;
            {
                std::lock_guard lk(mu_);
                for (const auto& [other_id, other] : containers_) in_use = in_use || (other != c && other->image == *img);
            }
            if (!in_use) {
                spdlog::info("container {}: rootfs image {} (cached per image)", c->id, *img);
                c->image = *img;
                c->image_shared = true;
            } else {
                // kestrel lets one image file back one drive: a second container of the image in
                // this pod gets a copy of the cached image, removed with it.
                c->image = fmt::format("{}/drives/{}.ext4", id_.state_dir, c->id);
                std::error_code ec;
                std::filesystem::copy_file(*img, c->image, std::filesystem::copy_options::overwrite_existing, ec);
                if (ec) return std::unexpected(Error{fmt::format("copy {} to {}: {}", *img, c->image, ec.message()), ec.value()});
                spdlog::info("container {}: rootfs image {} (a copy of {}, which another container uses)", c->id, c->image, *img);
            }
        } else {
            auto mounted = mount_rootfs(c->rootfs, root_dir);
            if (!mounted) return std::unexpected(mounted.error());
            c->image = fmt::format("{}/drives/{}.ext4", id_.state_dir, c->id);
            auto built = build_ext4_image(root_dir, c->image);
            unmount_all(root_dir, *mounted);
            if (!built) return std::unexpected(context(built.error(), "rootfs image"));
            spdlog::info("container {}: rootfs image {} (built for it)", c->id, c->image);
        }
        return {};
    };
    auto drop_image = [&] {
        if (!c->image.empty() && !c->image_shared) ::unlink(c->image.c_str());
    };
    {
        std::error_code ec;  // PodVm::boot makes it too: the image may come first
        std::filesystem::create_directories(id_.state_dir + "/drives", ec);
    }
    auto image_job = std::async(std::launch::async, prepare_image);
    auto vm_ready = ensure_vm(config);
    auto image_ready = image_job.get();
    if (!vm_ready) {
        if (image_ready) drop_image();
        return undo(vm_ready.error());
    }
    if (!image_ready) return undo(image_ready.error());
    auto slot = vm_->attach(c->image);
    if (!slot) {
        drop_image();
        return undo(slot.error());
    }
    c->slot = slot->index;
    auto cleanup_drive = [&] {
        for (const auto& host : c->volumes) release_volume(host);
        c->volumes.clear();
        (void)vm_->detach(c->slot);
        drop_image();
    };

    for (const auto& [dev, host] : block_volumes) {
        auto bytes = block_device_bytes(host);
        auto guest = bytes ? attach_volume(host, !dev.read_only) : std::unexpected(bytes.error());
        if (!guest) {
            cleanup_drive();
            return undo(context(guest.error(), fmt::format("block volume {} ({})", dev.container_path, host)));
        }
        c->volumes.push_back(host);
        // The agent waits for the drive's size, then binds it (PROTOCOL.md, kestrel-drive).
        json mount{{"destination", dev.container_path}, {"type", "kestrel-drive"}, {"source", *guest}, {"size", *bytes / 512 * 512}};
        if (dev.read_only) mount["options"] = {"ro"};
        config["mounts"].push_back(std::move(mount));
        spdlog::info("container {}: block volume {} is {} in the pod VM ({} bytes{}) at {}", c->id, host, *guest, *bytes,
                     dev.read_only ? ", read-only" : "", dev.container_path);
    }

    std::shared_ptr<AgentClient> agent;
    {
        std::lock_guard lk(mu_);
        agent = agent_;
    }
    json rootfs{{"device", slot->device}, {"fstype", "ext4"}, {"writable_layer", true}};
    // The agent waits for the guest to see the swapped drive's size (virtio-blk capacity is
    // whole 512-byte sectors) before mounting it: PROTOCOL.md, rootfs. Images are at least
    // 16 MiB (rootfs.cpp) and placeholders 1 MiB, so the size always tells the swap apart.
    std::error_code size_ec;
    if (auto bytes = std::filesystem::file_size(c->image, size_ec); !size_ec && bytes >= 512) rootfs["size"] = bytes / 512 * 512;
    json areq{{"op", "create"}, {"container", c->id}, {"spec", config}, {"rootfs", std::move(rootfs)}, {"stdio", stdio_json(paths)}};
    auto created = agent->call(std::move(areq), std::chrono::seconds(60));
    if (!created) {
        cleanup_drive();
        return undo(created.error());
    }
    std::uint32_t pid = json_u32(*created, "pid");
    auto io = attach_stdio(c->id, "", paths);
    if (!io) {
        (void)agent->call(json{{"op", "delete"}, {"container", c->id}});
        cleanup_drive();
        return undo(context(io.error(), "stdio"));
    }
    {
        std::lock_guard lk(mu_);
        c->init->pid = pid;
        c->init->io = std::move(*io);
    }
    ev::TaskCreate e;
    e.set_container_id(c->id);
    e.set_bundle(bundle);
    *e.mutable_rootfs() = req.rootfs();
    e.mutable_io()->set_stdin(req.stdin());
    e.mutable_io()->set_stdout(req.stdout());
    e.mutable_io()->set_stderr(req.stderr());
    e.mutable_io()->set_terminal(req.terminal());
    e.set_pid(pid);
    events_->publish(topic::kCreate, e);
    task::CreateTaskResponse resp;
    resp.set_pid(pid);
    return resp.SerializeAsString();
}

Result<std::string> TaskService::attach_volume(const std::string& host_path, bool writable) {
    std::lock_guard lk(vm_mu_);
    if (auto v = volumes_.find(host_path); v != volumes_.end()) {
        if (v->second.writable != writable)
            return not_allowed("another container of the pod has it {}", v->second.writable ? "read-write" : "read-only");
        ++v->second.users;
        return v->second.device;
    }
    if (!vm_) return not_allowed("the pod VM is not running");
    auto slot = TRY(vm_->attach(host_path, writable));
    volumes_[host_path] = Volume{slot.index, slot.device, 1, writable};
    return slot.device;
}

void TaskService::release_volume(const std::string& host_path) {
    std::lock_guard lk(vm_mu_);
    auto v = volumes_.find(host_path);
    if (v == volumes_.end() || --v->second.users > 0) return;
    // The device's last container is gone, so nothing in the guest has it open: the swap
    // back closes kestrel's descriptor, which flushes what the guest wrote to the host device.
    if (vm_) {
        if (auto r = vm_->detach(v->second.slot); !r) spdlog::warn("detach block volume {}: {}", host_path, r.error().what());
    }
    volumes_.erase(v);
}

TaskService::Reply TaskService::start(std::string_view payload) {
    auto req = TRY_STATUS(parse<task::StartRequest>(payload));
    TRY_STATUS(check_id("id", req.id()));
    TRY_STATUS(check_id("exec_id", req.exec_id(), true));
    std::shared_ptr<Proc> p;
    std::shared_ptr<AgentClient> agent;
    {
        std::lock_guard lk(mu_);
        p = find_proc(req.id(), req.exec_id());
        agent = agent_;
        if (!p) return status(Code::NotFound, fmt::format("no process {}/{}", req.id(), req.exec_id()));
        if (p->state != ProcState::Created) return status(Code::FailedPrecondition, fmt::format("process {}/{} was already started", req.id(), req.exec_id()));
    }
    if (!agent) return status(Code::FailedPrecondition, "the pod VM is not running");
    auto r = TRY_RESULT(agent->call(json{{"op", "start"}, {"container", req.id()}, {"exec", req.exec_id()}}));
    std::uint32_t pid = json_u32(r, "pid");
    {
        std::lock_guard lk(mu_);
        p->pid = pid;
        if (p->state == ProcState::Created) p->state = ProcState::Running;  // unless it already exited
    }
    if (req.exec_id().empty()) {
        ev::TaskStart e;
        e.set_container_id(req.id());
        e.set_pid(pid);
        events_->publish(topic::kStart, e);
    } else {
        ev::TaskExecStarted e;
        e.set_container_id(req.id());
        e.set_exec_id(req.exec_id());
        e.set_pid(pid);
        events_->publish(topic::kExecStarted, e);
    }
    task::StartResponse resp;
    resp.set_pid(pid);
    return resp.SerializeAsString();
}

TaskService::Reply TaskService::state(std::string_view payload) {
    auto req = TRY_STATUS(parse<task::StateRequest>(payload));
    TRY_STATUS(check_id("id", req.id()));
    TRY_STATUS(check_id("exec_id", req.exec_id(), true));
    std::lock_guard lk(mu_);
    auto c = containers_.find(req.id());
    auto p = find_proc(req.id(), req.exec_id());
    if (!p) return status(Code::NotFound, fmt::format("no process {}/{}", req.id(), req.exec_id()));
    task::StateResponse resp;
    resp.set_id(req.exec_id().empty() ? req.id() : req.exec_id());
    resp.set_bundle(c->second->bundle);
    resp.set_pid(p->pid);
    switch (p->state) {
    case ProcState::Created: resp.set_status(types::CREATED); break;
    case ProcState::Running: resp.set_status(paused_ ? types::PAUSED : types::RUNNING); break;
    case ProcState::Stopped: resp.set_status(types::STOPPED); break;
    }
    resp.set_stdin(p->stdio.in);
    resp.set_stdout(p->stdio.out);
    resp.set_stderr(p->stdio.err);
    resp.set_terminal(p->stdio.terminal);
    resp.set_exit_status(p->exit_status);
    if (p->exited_at_ns) set_ts(resp.mutable_exited_at(), p->exited_at_ns);
    resp.set_exec_id(req.exec_id());
    return resp.SerializeAsString();
}

TaskService::Reply TaskService::wait(const ttrpc::CallContext& ctx, std::string_view payload) {
    auto req = TRY_STATUS(parse<task::WaitRequest>(payload));
    TRY_STATUS(check_id("id", req.id()));
    TRY_STATUS(check_id("exec_id", req.exec_id(), true));
    std::unique_lock lk(mu_);
    auto p = find_proc(req.id(), req.exec_id());
    if (!p) return status(Code::NotFound, fmt::format("no process {}/{}", req.id(), req.exec_id()));
    if (!cv_.wait(lk, ctx.stop, [&] { return p->state == ProcState::Stopped; })) {
        return status(Code::Cancelled, "Wait: the connection closed");
    }
    task::WaitResponse resp;
    resp.set_exit_status(p->exit_status);
    set_ts(resp.mutable_exited_at(), p->exited_at_ns);
    return resp.SerializeAsString();
}

TaskService::Reply TaskService::kill(std::string_view payload) {
    auto req = TRY_STATUS(parse<task::KillRequest>(payload));
    TRY_STATUS(check_id("id", req.id()));
    TRY_STATUS(check_id("exec_id", req.exec_id(), true));
    if (req.signal() < 1 || req.signal() > 64) return status(Code::InvalidArgument, fmt::format("signal {} is not 1..64", req.signal()));
    std::shared_ptr<AgentClient> agent;
    {
        std::lock_guard lk(mu_);
        auto p = find_proc(req.id(), req.exec_id());
        if (!p) return status(Code::NotFound, fmt::format("no process {}/{}", req.id(), req.exec_id()));
        // runc's shim answers NotFound for a finished process; containerd treats it as done.
        if (p->state == ProcState::Stopped && !req.all()) return status(Code::NotFound, "process already finished");
        agent = agent_;
    }
    if (!agent) return status(Code::NotFound, "process already finished (the pod VM is gone)");
    auto r = agent->call(json{{"op", "signal"}, {"container", req.id()}, {"exec", req.exec_id()}, {"signal", req.signal()}, {"all", req.all()}});
    if (!r) {
        std::lock_guard lk(mu_);
        auto p = find_proc(req.id(), req.exec_id());
        if (p && p->state == ProcState::Stopped) return status(Code::NotFound, "process already finished");
        return status(r.error());
    }
    return google::protobuf::Empty().SerializeAsString();
}

TaskService::Reply TaskService::remove(std::string_view payload) {
    auto req = TRY_STATUS(parse<task::DeleteRequest>(payload));
    TRY_STATUS(check_id("id", req.id()));
    TRY_STATUS(check_id("exec_id", req.exec_id(), true));
    std::shared_ptr<Container> c;
    std::shared_ptr<Proc> p;
    std::shared_ptr<AgentClient> agent;
    {
        std::lock_guard lk(mu_);
        p = find_proc(req.id(), req.exec_id());
        if (!p) return status(Code::NotFound, fmt::format("no process {}/{}", req.id(), req.exec_id()));
        if (p->state == ProcState::Running) return status(Code::FailedPrecondition, fmt::format("process {}/{} is running: kill it first", req.id(), req.exec_id()));
        c = containers_[req.id()];
        agent = agent_;
    }
    json areq{{"op", "delete"}, {"container", req.id()}};
    if (!req.exec_id().empty()) areq["exec"] = req.exec_id();
    if (agent && !agent->closed()) {
        if (auto r = agent->call(areq); !r) spdlog::warn("agent delete {}/{}: {}", req.id(), req.exec_id(), r.error().what());
    }
    std::int64_t exited_at;
    {
        std::lock_guard lk(mu_);
        if (p->state != ProcState::Stopped) {  // deleted before it started: it never ran
            p->state = ProcState::Stopped;
            p->exit_status = 128 + SIGKILL;
            p->exited_at_ns = realtime_ns();
            cv_.notify_all();
        }
        exited_at = p->exited_at_ns;
        if (req.exec_id().empty()) containers_.erase(req.id());
        else c->execs.erase(req.exec_id());
    }
    if (req.exec_id().empty()) {
        p->io.reset();  // its streams ended with the container
        for (auto& [_, e] : c->execs) e->io.reset();
        for (const auto& host : c->volumes) release_volume(host);
        std::lock_guard vlk(vm_mu_);
        if (vm_ && c->slot >= 0) {
            if (auto r = vm_->detach(c->slot); !r) spdlog::warn("detach {}: {}", c->id, r.error().what());
        }
        if (!c->image.empty() && !c->image_shared) ::unlink(c->image.c_str());
        ev::TaskDelete e;
        e.set_container_id(req.id());
        e.set_pid(p->pid);
        e.set_exit_status(p->exit_status);
        set_ts(e.mutable_exited_at(), exited_at);
        events_->publish(topic::kDelete, e);
    }
    task::DeleteResponse resp;
    resp.set_pid(p->pid);
    resp.set_exit_status(p->exit_status);
    set_ts(resp.mutable_exited_at(), exited_at);
    return resp.SerializeAsString();
}

TaskService::Reply TaskService::exec(std::string_view payload) {
    auto req = TRY_STATUS(parse<task::ExecProcessRequest>(payload));
    TRY_STATUS(check_id("id", req.id()));
    TRY_STATUS(check_id("exec_id", req.exec_id()));
    // The spec is runtime-spec's Process as JSON in an Any (containerd's typeurl for
    // "types.containerd.io/opencontainers/runtime-spec/1/Process").
    auto process = json::parse(req.spec().value(), nullptr, false);
    if (process.is_discarded() || !process.is_object()) return status(Code::InvalidArgument, "exec spec: not a JSON object");
    StdioPaths paths{req.stdin(), req.stdout(), req.stderr(), req.terminal()};
    if (paths.terminal) paths.err.clear();
    TRY_RESULT(check_stdio_paths(paths));
    std::shared_ptr<Container> c;
    std::shared_ptr<AgentClient> agent;
    auto p = std::make_shared<Proc>();
    p->exec = req.exec_id();
    p->stdio = paths;
    {
        std::lock_guard lk(mu_);
        auto it = containers_.find(req.id());
        if (it == containers_.end()) return status(Code::NotFound, fmt::format("no container {}", req.id()));
        c = it->second;
        if (c->init->state == ProcState::Stopped) return status(Code::FailedPrecondition, fmt::format("container {} has stopped", req.id()));
        if (c->execs.contains(req.exec_id())) return status(Code::AlreadyExists, fmt::format("exec {} already exists", req.exec_id()));
        if (c->execs.size() >= 1024) return status(Code::ResourceExhausted, "more than 1024 execs in one container");
        c->execs[req.exec_id()] = p;
        agent = agent_;
    }
    auto undo = [&](const Error& e) {
        std::lock_guard lk(mu_);
        c->execs.erase(req.exec_id());
        return status(e);
    };
    if (!agent) return undo(Error{"the pod VM is not running", 0, ErrorKind::NotAllowed});
    auto r = agent->call(json{{"op", "exec"}, {"container", req.id()}, {"exec", req.exec_id()}, {"process", process}, {"stdio", stdio_json(paths)}});
    if (!r) return undo(r.error());
    std::unique_ptr<ProcessIo> io;
    {
        std::lock_guard vlk(vm_mu_);
        auto a = attach_stdio(req.id(), req.exec_id(), paths);
        if (!a) {
            (void)agent->call(json{{"op", "signal"}, {"container", req.id()}, {"exec", req.exec_id()}, {"signal", SIGKILL}});
            return undo(context(a.error(), "stdio"));
        }
        io = std::move(*a);
    }
    {
        std::lock_guard lk(mu_);
        p->io = std::move(io);
    }
    ev::TaskExecAdded e;
    e.set_container_id(req.id());
    e.set_exec_id(req.exec_id());
    events_->publish(topic::kExecAdded, e);
    return google::protobuf::Empty().SerializeAsString();
}

TaskService::Reply TaskService::resize_pty(std::string_view payload) {
    auto req = TRY_STATUS(parse<task::ResizePtyRequest>(payload));
    TRY_STATUS(check_id("id", req.id()));
    TRY_STATUS(check_id("exec_id", req.exec_id(), true));
    if (req.width() > 65535 || req.height() > 65535) return status(Code::InvalidArgument, "pty size above 65535");
    std::shared_ptr<AgentClient> agent;
    {
        std::lock_guard lk(mu_);
        if (!find_proc(req.id(), req.exec_id())) return status(Code::NotFound, fmt::format("no process {}/{}", req.id(), req.exec_id()));
        agent = agent_;
    }
    if (!agent) return status(Code::FailedPrecondition, "the pod VM is not running");
    TRY_RESULT(agent->call(json{{"op", "resize"}, {"container", req.id()}, {"exec", req.exec_id()}, {"width", req.width()}, {"height", req.height()}}));
    return google::protobuf::Empty().SerializeAsString();
}

TaskService::Reply TaskService::close_io(std::string_view payload) {
    auto req = TRY_STATUS(parse<task::CloseIORequest>(payload));
    TRY_STATUS(check_id("id", req.id()));
    TRY_STATUS(check_id("exec_id", req.exec_id(), true));
    std::lock_guard lk(mu_);
    auto p = find_proc(req.id(), req.exec_id());
    if (!p) return status(Code::NotFound, fmt::format("no process {}/{}", req.id(), req.exec_id()));
    if (req.stdin() && p->io) p->io->close_stdin();
    return google::protobuf::Empty().SerializeAsString();
}

std::expected<std::shared_ptr<AgentClient>, ttrpc::Status> TaskService::container_agent(const std::string& id) {
    std::shared_ptr<AgentClient> agent;
    {
        std::lock_guard lk(mu_);
        if (!containers_.contains(id)) return status(Code::NotFound, fmt::format("no container {}", id));
        agent = agent_;
    }
    if (!agent) return status(Code::FailedPrecondition, "the pod VM is not running");
    return agent;
}

TaskService::Reply TaskService::pids(std::string_view payload) {
    auto req = TRY_STATUS(parse<task::PidsRequest>(payload));
    TRY_STATUS(check_id("id", req.id()));
    auto agent = TRY_STATUS(container_agent(req.id()));
    json r = TRY_RESULT(agent->call(json{{"op", "pids"}, {"container", req.id()}}));
    task::PidsResponse resp;
    if (r.contains("pids") && r["pids"].is_array()) {
        for (const auto& v : r["pids"]) {
            if (!v.is_number_unsigned() || v.get<std::uint64_t>() > 0xffffffffu) continue;
            resp.add_processes()->set_pid(v.get<std::uint32_t>());
            if (resp.processes_size() >= 65536) break;
        }
    }
    return resp.SerializeAsString();
}

TaskService::Reply TaskService::stats(std::string_view payload) {
    auto req = TRY_STATUS(parse<task::StatsRequest>(payload));
    TRY_STATUS(check_id("id", req.id()));
    auto agent = TRY_STATUS(container_agent(req.id()));
    // The container's cgroup inside the guest (PROTOCOL.md `stats`).
    json s = TRY_RESULT(agent->call(json{{"op", "stats"}, {"container", req.id()}}));
    task::StatsResponse resp;
    resp.mutable_stats()->set_type_url(std::string(kCgroup2MetricsType));
    resp.mutable_stats()->set_value(encode_cgroup2_metrics(s));
    return resp.SerializeAsString();
}

TaskService::Reply TaskService::connect(std::string_view payload) {
    auto req = TRY_STATUS(parse<task::ConnectRequest>(payload));
    TRY_STATUS(check_id("id", req.id()));
    task::ConnectResponse resp;
    resp.set_shim_pid(static_cast<std::uint32_t>(::getpid()));
    std::lock_guard lk(mu_);
    auto c = containers_.find(req.id());
    if (c != containers_.end()) resp.set_task_pid(c->second->init->pid);
    resp.set_version("kestrel-shim 1");
    return resp.SerializeAsString();
}

TaskService::Reply TaskService::shutdown(std::string_view payload) {
    auto req = TRY_STATUS(parse<task::ShutdownRequest>(payload));
    {
        std::lock_guard lk(mu_);
        // runtime v2: Shutdown is a request; a shim with tasks left keeps running.
        if (!containers_.empty() && !req.now()) return google::protobuf::Empty().SerializeAsString();
    }
    spdlog::info("Shutdown: no task left, exiting");
    request_exit_();
    return google::protobuf::Empty().SerializeAsString();
}

TaskService::Reply TaskService::pause_resume(std::string_view payload, bool pause) {
    auto req = TRY_STATUS(parse<task::PauseRequest>(payload));  // ResumeRequest has the same shape
    TRY_STATUS(check_id("id", req.id()));
    {
        std::lock_guard lk(mu_);
        if (!containers_.contains(req.id())) return status(Code::NotFound, fmt::format("no container {}", req.id()));
    }
    {
        // The whole pod VM pauses: every container of the pod with it.
        std::lock_guard vlk(vm_mu_);
        if (!vm_) return status(Code::FailedPrecondition, "the pod VM is not running");
        TRY_RESULT(vm_->set_paused(pause));
    }
    {
        std::lock_guard lk(mu_);
        paused_ = pause;
    }
    if (pause) {
        ev::TaskPaused e;
        e.set_container_id(req.id());
        events_->publish(topic::kPaused, e);
    } else {
        ev::TaskResumed e;
        e.set_container_id(req.id());
        events_->publish(topic::kResumed, e);
    }
    return google::protobuf::Empty().SerializeAsString();
}

void TaskService::on_agent_exit(AgentExit e) {
    // Off the agent's reader thread: the output copies must reach their FIFOs before
    // containerd hears of the exit (it closes its side of the FIFOs on TaskExit).
    std::thread([this, e = std::move(e)] {
        std::shared_ptr<Proc> p;
        {
            std::lock_guard lk(mu_);
            p = find_proc(e.container, e.exec);
            if (!p || p->state == ProcState::Stopped) return;
        }
        if (p->io) p->io->wait_output();
        {
            std::lock_guard lk(mu_);
            if (p->state == ProcState::Stopped) return;
            p->state = ProcState::Stopped;
            p->exit_status = e.status;
            p->exited_at_ns = e.exited_at_ns > 0 ? e.exited_at_ns : realtime_ns();
            cv_.notify_all();
        }
        ev::TaskExit x;
        x.set_container_id(e.container);
        x.set_id(e.exec.empty() ? e.container : e.exec);
        x.set_pid(p->pid);
        x.set_exit_status(p->exit_status);
        set_ts(x.mutable_exited_at(), p->exited_at_ns);
        events_->publish(topic::kExit, x);
    }).detach();
}

void TaskService::on_vm_exit() {
    // Every process still running died with the VM: report them as killed.
    std::vector<ev::TaskExit> exits;
    {
        std::lock_guard lk(mu_);
        vm_dead_ = true;
        auto now = realtime_ns();
        for (auto& [cid, c] : containers_) {
            auto mark = [&](Proc& p) {
                if (p.state == ProcState::Stopped) return;
                p.state = ProcState::Stopped;
                p.exit_status = 128 + SIGKILL;
                p.exited_at_ns = now;
                ev::TaskExit x;
                x.set_container_id(cid);
                x.set_id(p.exec.empty() ? cid : p.exec);
                x.set_pid(p.pid);
                x.set_exit_status(p.exit_status);
                set_ts(x.mutable_exited_at(), now);
                exits.push_back(std::move(x));
            };
            mark(*c->init);
            for (auto& [_, p] : c->execs) mark(*p);
        }
        cv_.notify_all();
    }
    for (auto& x : exits) events_->publish(topic::kExit, x);
    drop_pod_network();  // kestrel is gone: nothing uses the taps any more
}

void TaskService::stop_vm() {
    std::shared_ptr<AgentClient> agent;
    {
        std::lock_guard lk(mu_);
        agent = std::move(agent_);
    }
    if (agent && !agent->closed()) (void)agent->call(json{{"op", "shutdown"}}, std::chrono::seconds(5));
    std::lock_guard vlk(vm_mu_);
    if (vm_) vm_->stop(std::chrono::seconds(5));
    vm_.reset();
    agent.reset();
    drop_pod_network();
}

}  // namespace kestrel::shim
