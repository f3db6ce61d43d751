#include "cni-shim/shim/pod_vm.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <spdlog/spdlog.h>

#include "cni-shim/shim/api_client.hpp"
#include "vmm/base/fd.hpp"

namespace kestrel::shim {

namespace fs = std::filesystem;
using nlohmann::json;

Result<PodVmConfig> load_pod_vm_config(const std::string& path) {
    PodVmConfig c;
    std::ifstream in(path);
    if (!in) return c;
    std::stringstream ss;
    ss << in.rdbuf();
    auto j = json::parse(ss.str(), nullptr, false);
    if (j.is_discarded() || !j.is_object()) return bad_request("{}: not a JSON object", path);
    for (auto& [k, v] : j.items()) {
        auto str = [&](std::string& dst) -> Result<void> {
            if (!v.is_string() || v.get_ref<const std::string&>().empty()) return bad_request("{}: {}: expected a non-empty string", path, k);
            dst = v.get<std::string>();
            return {};
        };
        auto num = [&](std::uint32_t& dst, std::uint32_t lo, std::uint32_t hi) -> Result<void> {
            if (!v.is_number_unsigned() || v.get<std::uint64_t>() < lo || v.get<std::uint64_t>() > hi) return bad_request("{}: {}: expected an integer {}..{}", path, k, lo, hi);
            dst = v.get<std::uint32_t>();
            return {};
        };
        if (k == "kestrel") TRY(str(c.kestrel));
        else if (k == "kernel") TRY(str(c.kernel));
        else if (k == "initrd") TRY(str(c.initrd));
        else if (k == "cmdline") TRY(str(c.cmdline));
        else if (k == "image_cache_dir") {
            if (!v.is_string()) return bad_request("{}: {}: expected a string", path, k);
            c.image_cache_dir = v.get<std::string>();
        }
        else if (k == "vcpus") TRY(num(c.vcpus, 1, 254));
        else if (k == "memory_mib") TRY(num(c.memory_mib, 64, 1 << 20));
        else if (k == "max_vcpus") TRY(num(c.max_vcpus, 1, 254));
        else if (k == "max_memory_mib") TRY(num(c.max_memory_mib, 64, 1 << 20));
        else if (k == "spare_drives") TRY(num(c.spare_drives, 1, 20));
        else if (k == "volume_drives") TRY(num(c.volume_drives, 0, 6));  // with spare_drives, at most vda..vdz
        else if (k == "agent_port") TRY(num(c.agent_port, 1, 0xffffffffu));
        else if (k == "free_page_reporting") {
            if (!v.is_boolean()) return bad_request("{}: {}: expected true or false", path, k);
            c.free_page_reporting = v.get<bool>();
        }
        else if (k == "image_cache_keep_s") {
            std::uint32_t s = 0;
            TRY(num(s, 60, 10u * 366 * 86400));  // shorter: a pod starting meanwhile could lose its image
            c.image_cache_keep = std::chrono::seconds(s);
        } else if (k == "boot_timeout_s") {
            std::uint32_t s = 0;
            TRY(num(s, 1, 3600));
            c.boot_timeout = std::chrono::seconds(s);
        } else return bad_request("{}: unknown field '{}'", path, k);
    }
    if (c.vcpus > c.max_vcpus) return bad_request("{}: vcpus {} is above max_vcpus {}", path, c.vcpus, c.max_vcpus);
    if (c.memory_mib > c.max_memory_mib) {
        return bad_request("{}: memory_mib {} is above max_memory_mib {}", path, c.memory_mib, c.max_memory_mib);
    }
    return c;
}

Result<PodVmSize> size_pod_vm(const PodVmConfig& cfg, const json& spec) {
    PodVmSize size{cfg.vcpus, cfg.memory_mib, {}};
    const json* ann = nullptr;
    if (spec.is_object()) {
        auto it = spec.find("annotations");
        if (it != spec.end() && it->is_object()) ann = &*it;
    }
    // An absent annotation is 0; a present one must be a decimal integer (containerd writes
    // strconv.FormatInt), negative allowed: the kubelet's "no quota" is -1.
    auto value = [&](const char* key) -> Result<std::int64_t> {
        if (!ann) return 0;
        auto it = ann->find(key);
        if (it == ann->end()) return 0;
        if (!it->is_string()) return bad_request("pod annotation {}: not a string", key);
        const auto& text = it->get_ref<const std::string&>();
        std::int64_t v = 0;
        auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
        if (text.empty() || ec != std::errc() || end != text.data() + text.size()) {
            return bad_request("pod annotation {}: '{}' is not an integer", key, text.substr(0, 40));
        }
        return v;
    };
    const std::int64_t quota = TRY(value("io.kubernetes.cri.sandbox-cpu-quota"));
    const std::int64_t period = TRY(value("io.kubernetes.cri.sandbox-cpu-period"));
    const std::int64_t memory = TRY(value("io.kubernetes.cri.sandbox-memory"));
    if (quota > 0 && period > 0) {
        // ceil(quota / period) without quota + period overflowing; clamped before the sum.
        const std::int64_t extra = std::min<std::int64_t>(quota / period + (quota % period != 0), 1 << 20);
        const std::int64_t want = cfg.vcpus + extra;
        size.vcpus = static_cast<std::uint32_t>(std::min<std::int64_t>(want, cfg.max_vcpus));
        if (want > cfg.max_vcpus) {
            size.notes.push_back(fmt::format("{} + ceil(cpu quota {} / period {}) vCPUs capped at max_vcpus {}",
                                             cfg.vcpus, quota, period, cfg.max_vcpus));
        }
    }
    if (memory > 0) {
        const std::int64_t mib = (memory >> 20) + ((memory & ((1 << 20) - 1)) != 0);
        const std::int64_t want = cfg.memory_mib + mib;
        size.memory_mib = static_cast<std::uint32_t>(std::min<std::int64_t>(want, cfg.max_memory_mib));
        if (want > cfg.max_memory_mib) {
            size.notes.push_back(fmt::format("{} MiB (memory limit {} bytes + {} MiB) capped at max_memory_mib {}",
                                             want, memory, cfg.memory_mib, cfg.max_memory_mib));
        }
    }
    return size;
}

namespace {
// A 1 MiB zero image (kestrel refuses empty ones), a new file per use: see PodVm::detach.
Result<std::string> make_placeholder(const std::string& state_dir, std::uint32_t slot, std::uint64_t gen) {
    std::string p = fmt::format("{}/drives/spare{}-{}.img", state_dir, slot, gen);
    UniqueFd f(::open(p.c_str(), O_CREAT | O_TRUNC | O_WRONLY | O_CLOEXEC, 0600));
    if (!f || ::ftruncate(f.get(), 1 << 20) != 0) return fail_errno("create {}", p);
    return p;
}
}  // namespace

Result<std::unique_ptr<PodVm>> PodVm::boot(const PodVmConfig& cfg, const std::string& state_dir,
                                           std::function<void(int)> on_exit, const std::vector<PodVmNet>& nets) {
    std::unique_ptr<PodVm> vm(new PodVm());
    vm->cfg_ = cfg;
    vm->state_dir_ = state_dir;
    vm->on_exit_ = std::move(on_exit);
    std::error_code ec;
    fs::create_directories(state_dir + "/drives", ec);
    if (ec) return fail("mkdir {}/drives: {}", state_dir, ec.message());
    const std::uint32_t slots = cfg.spare_drives + cfg.volume_drives;
    for (std::uint32_t i = 0; i < slots; ++i) {
        vm->placeholder_.push_back(TRY(make_placeholder(state_dir, i, 0)));
        vm->writable_.push_back(i >= cfg.spare_drives);
    }
    vm->used_.assign(slots, false);

    std::string api = vm->api_sock();
    std::string logs = cfg.log_dir.empty() ? state_dir : cfg.log_dir;
    std::string log = logs + "/kestrel.log";
    std::string console = "file:" + logs + "/console.log";
    std::vector<std::string> argv = {cfg.kestrel, "run", "--api-sock", api, "--serial", console, "--log-level", "info"};
    // The taps go in by fd: see pod_net.hpp for why not PUT /network-interfaces.
    for (const auto& n : nets) {
        if (n.fd < 0) return fail("pod network {}: no tap fd", n.id);
        argv.push_back("--net");
        argv.push_back(fmt::format("fd={},mac={},id={}", n.fd, n.mac, n.id));
    }
    // Everything the child needs is made before fork: the shim has threads, so the child
    // may only make async-signal-safe calls.
    std::vector<char*> av;
    for (auto& a : argv) av.push_back(a.data());
    av.push_back(nullptr);
    pid_t pid = ::fork();
    if (pid < 0) return fail_errno("fork");
    if (pid == 0) {
        int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0600);
        int null = ::open("/dev/null", O_RDONLY);
        if (fd >= 0) { ::dup2(fd, 1); ::dup2(fd, 2); }
        if (null >= 0) ::dup2(null, 0);
        // Only here, in the child, the taps' fds lose O_CLOEXEC (the shim's other children
        // must not hold them: a tap lives as long as an fd to it).
        for (const auto& n : nets) ::fcntl(n.fd, F_SETFD, 0);
        ::setsid();  // not in the shim's process group: containerd's signals are for the shim
        ::execvp(av[0], av.data());
        ::_exit(127);
    }
    vm->pid_ = pid;
    {
        std::ofstream pf(state_dir + "/kestrel.pid");
        pf << pid << "\n";
    }
    vm->monitor_ = std::thread([p = vm.get()] {
        int st = 0;
        while (::waitpid(p->pid_, &st, 0) < 0 && errno == EINTR) {}
        spdlog::info("kestrel {} ended (wait status {:#x})", p->pid_, st);
        if (p->on_exit_) p->on_exit_(st);
    });

    // kestrel creates the socket after opening its files; wait for it to answer.
    const auto forked = std::chrono::steady_clock::now();
    auto until = forked + std::chrono::seconds(10);
    for (;;) {
        auto r = api_request(api, "GET", "/", "", std::chrono::seconds(2));
        if (r && r->status == 200) break;
        if (std::chrono::steady_clock::now() > until) return fail("kestrel did not serve {} within 10 s (see {})", api, log);
        ::usleep(50'000);
    }
    const auto serving = std::chrono::steady_clock::now();
    TRY(api_call(api, "PUT", "/boot-source",
                 json{{"kernel_image_path", cfg.kernel}, {"initrd_path", cfg.initrd}, {"boot_args", cfg.cmdline}}.dump()));
    TRY(api_call(api, "PUT", "/machine-config", json{{"vcpu_count", cfg.vcpus}, {"mem_size_mib", cfg.memory_mib}}.dump()));
    // The spare drives are read-only: the guest mounts rootfs images read-only under a tmpfs
    // overlay, and a read-only drive takes kestrel's shared image lock, so one cached image
    // serves many pods. The volume drives after them are read-write (a drive's read-only
    // flag is a virtio feature the guest negotiates once, virtio 1.2 §5.2.3: a swap cannot
    // change it).
    for (std::uint32_t i = 0; i < slots; ++i) {
        std::string id = fmt::format("spare{}", i);
        TRY(api_call(api, "PUT", "/drives/" + id,
                     json{{"drive_id", id}, {"path_on_host", vm->placeholder_[i]},
                          {"is_root_device", false}, {"is_read_only", !vm->writable_[i]}}.dump()));
    }
    TRY(api_call(api, "PUT", "/vsock", json{{"guest_cid", 3}, {"uds_path", vm->vsock_path()}}.dump()));
    if (cfg.free_page_reporting) {
        TRY(api_call(api, "PUT", "/balloon",
                     json{{"amount_mib", 0}, {"deflate_on_oom", false}, {"free_page_reporting", true}}.dump()));
    }
    const auto configured = std::chrono::steady_clock::now();
    TRY(api_call(api, "PUT", "/actions", json{{"action_type", "InstanceStart"}}.dump(), std::chrono::seconds(60)));
    // For a pod's start-up breakdown (the agent's "listening" line in console.log has the
    // guest's uptime).
    auto ms = [](auto d) { return std::chrono::duration_cast<std::chrono::milliseconds>(d).count(); };
    spdlog::info("pod VM started: kestrel {} serving its API after {} ms, configured in {} ms, InstanceStart {} ms",
                 pid, ms(serving - forked), ms(configured - serving), ms(std::chrono::steady_clock::now() - configured));
    return vm;
}

PodVm::~PodVm() { stop(std::chrono::milliseconds(0)); }

void PodVm::stop(std::chrono::milliseconds grace) {
    if (!monitor_.joinable()) return;
    auto until = std::chrono::steady_clock::now() + grace;
    while (std::chrono::steady_clock::now() < until && ::kill(pid_, 0) == 0) {
        // A zombie still answers kill(0): the monitor reaps it; check its /proc state.
        std::ifstream st(fmt::format("/proc/{}/stat", pid_));
        std::string s;
        std::getline(st, s);
        auto rp = s.rfind(')');
        if (rp != std::string::npos && rp + 2 < s.size() && s[rp + 2] == 'Z') break;
        ::usleep(50'000);
    }
    ::kill(pid_, SIGKILL);
    monitor_.join();
}

Result<PodVm::Slot> PodVm::attach(const std::string& image, bool writable) {
    std::lock_guard lk(mu_);
    for (std::size_t i = 0; i < used_.size(); ++i) {
        if (used_[i] || writable_[i] != writable) continue;
        std::string id = fmt::format("spare{}", i);
        TRY(api_call(api_sock(), "PATCH", "/drives/" + id, json{{"drive_id", id}, {"path_on_host", image}}.dump()));
        used_[i] = true;
        // The drives were configured in slot order and enumerate on PCI in that order, so
        // slot i is the guest's i-th virtio disk.
        return Slot{static_cast<int>(i), fmt::format("/dev/vd{}", static_cast<char>('a' + i))};
    }
    const auto n = std::count(writable_.begin(), writable_.end(), writable);
    if (writable) return not_allowed("all {} read-write volume drive slots of the pod VM are in use (shim.json volume_drives)", n);
    return not_allowed("all {} read-only drive slots (rootfs images, read-only volumes) of the pod VM are in use (shim.json spare_drives)", n);
}

Result<void> PodVm::detach(int index) {
    std::lock_guard lk(mu_);
    if (index < 0 || static_cast<std::size_t>(index) >= used_.size()) return fail("no drive slot {}", index);
    std::string id = fmt::format("spare{}", index);
    // A fresh placeholder file, not the slot's first one again: kestrel (as measured in
    // pod-ctr) refuses to swap back to an image this drive used before ("holds a write
    // lock"), so each detach swaps to a new file and removes the old one.
    auto i = static_cast<std::size_t>(index);
    std::string fresh = TRY(make_placeholder(state_dir_, static_cast<std::uint32_t>(index), ++generation_));
    if (auto r = api_call(api_sock(), "PATCH", "/drives/" + id, json{{"drive_id", id}, {"path_on_host", fresh}}.dump()); !r) {
        ::unlink(fresh.c_str());
        return std::unexpected(r.error());
    }
    ::unlink(placeholder_[i].c_str());
    placeholder_[i] = fresh;
    used_[i] = false;
    return {};
}

Result<void> PodVm::set_paused(bool paused) {
    return api_call(api_sock(), "PATCH", "/vm", json{{"state", paused ? "Paused" : "Resumed"}}.dump());
}

void kill_recorded_kestrel(const std::string& state_dir) {
    std::ifstream pf(state_dir + "/kestrel.pid");
    long pid = 0;
    if (!(pf >> pid) || pid <= 1) return;
    std::ifstream cl(fmt::format("/proc/{}/cmdline", pid), std::ios::binary);
    std::stringstream ss;
    ss << cl.rdbuf();
    std::string cmd = ss.str();
    for (auto& c : cmd) if (c == '\0') c = ' ';
    if (cmd.find(state_dir + "/api.sock") == std::string::npos) return;  // not ours (pid reused)
    spdlog::info("killing kestrel {} left by a dead shim", pid);
    ::kill(static_cast<pid_t>(pid), SIGKILL);
}

}  // namespace kestrel::shim
