#include "vmm/import.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <filesystem>
#include <functional>

#include "vmm/base/fd.hpp"
#include "vmm/base/log.hpp"

namespace kestrel {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

constexpr const char* kQemuImg = "qemu-img";
constexpr const char* kInstallHint = "install qemu-utils (apt-get install qemu-utils)";
constexpr uint64_t kSector = 512;  // BlockFile refuses raw images of any other granularity

// What OpenStack allows `qemu-img info` on an image it did not make (nova's QEMU_IMG_LIMITS):
// a crafted header (a huge L1 table, a VMDK with millions of extents) must fail, not eat the
// host's memory or CPU.
constexpr rlim_t kInfoAddressSpace = rlim_t{1} << 30;
constexpr rlim_t kInfoCpuSeconds = 30;
// Bytes of a child's output kept: info's JSON (one entry per extent) and error messages.
constexpr size_t kMaxJson = 4 << 20;
constexpr size_t kMaxStderr = 64 << 10;

// File name suffixes and the format qemu-img must find behind them.
struct NamedFormat {
    std::string_view suffix, format, label;
};
constexpr NamedFormat kNamedFormats[] = {
    {".vmdk", "vmdk", "VMDK"}, {".vhd", "vpc", "VHD"}, {".vhdx", "vhdx", "VHDX"},
    {".qcow2", "qcow2", "qcow2"}, {".vdi", "vdi", "VDI"},
};

std::string lower(std::string s) {
    std::ranges::transform(s, s.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    return s;
}

// ---- signals ----------------------------------------------------------------------------

volatile sig_atomic_t g_signal = 0;
void on_stop_signal(int s) { g_signal = s; }

// While alive: SIGINT/SIGTERM/SIGHUP are blocked except inside ppoll (so none is lost
// between a check and the wait) and only recorded, so the import can stop qemu-img and
// remove its temporary file instead of dying with it in place.
class StopSignals {
public:
    static constexpr std::array<int, 3> kSignals{SIGINT, SIGTERM, SIGHUP};

    StopSignals() {
        g_signal = 0;
        sigset_t set;
        sigemptyset(&set);
        for (int s : kSignals) sigaddset(&set, s);
        ::sigprocmask(SIG_BLOCK, &set, &saved_mask_);
        wait_mask_ = saved_mask_;
        struct sigaction sa {};
        sa.sa_handler = on_stop_signal;
        sigemptyset(&sa.sa_mask);
        for (size_t i = 0; i < kSignals.size(); ++i) {
            ::sigaction(kSignals[i], nullptr, &saved_[i]);
            if (saved_[i].sa_handler == SIG_IGN) continue;  // nohup: keep ignoring it
            ::sigaction(kSignals[i], &sa, nullptr);
            sigdelset(&wait_mask_, kSignals[i]);
        }
    }
    ~StopSignals() {
        ::sigprocmask(SIG_SETMASK, &saved_mask_, nullptr);  // pending ones reach on_stop_signal
        for (size_t i = 0; i < kSignals.size(); ++i) ::sigaction(kSignals[i], &saved_[i], nullptr);
    }
    StopSignals(const StopSignals&) = delete;
    StopSignals& operator=(const StopSignals&) = delete;

    const sigset_t& wait_mask() const { return wait_mask_; }
    const sigset_t& child_mask() const { return saved_mask_; }
    static int received() { return g_signal; }

private:
    sigset_t saved_mask_{}, wait_mask_{};
    std::array<struct sigaction, kSignals.size()> saved_{};
};

// ---- qemu-img as a child process --------------------------------------------------------

struct ToolRun {
    int status = 0;     // waitpid status
    std::string out;    // stdout, when kept
    std::string err;    // stderr, at most kMaxStderr
};

std::string trimmed(std::string s) {
    while (!s.empty() && (s.back() == '\n' || s.back() == '\r' || s.back() == ' ')) s.pop_back();
    return s;
}

// Runs `args` (args[0] looked up on PATH) with stdin /dev/null and both outputs piped, until
// it exits. `on_out` sees stdout as it arrives; with `keep_out` it is also collected. A stop
// signal is passed on to the child as SIGTERM, and the child is still waited for.
Result<ToolRun> run_tool(const std::vector<std::string>& args, const StopSignals& sig, bool limited,
                         bool keep_out, const std::function<void(std::string_view)>& on_out) {
    std::vector<char*> argv;
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    UniqueFd devnull(::open("/dev/null", O_RDONLY | O_CLOEXEC));
    if (!devnull) return fail_errno("/dev/null");
    UniqueFd out_r, out_w, err_r, err_w, exec_r, exec_w;
    if (!make_pipe(out_r, out_w) || !make_pipe(err_r, err_w) || !make_pipe(exec_r, exec_w)) return fail_errno("pipe");

    pid_t pid = ::fork();
    if (pid < 0) return fail_errno("fork");
    if (pid == 0) {
        // The child: async-signal-safe calls only up to exec.
        ::dup2(devnull.get(), STDIN_FILENO);
        ::dup2(out_w.get(), STDOUT_FILENO);
        ::dup2(err_w.get(), STDERR_FILENO);
        if (limited) {
            const struct rlimit as{kInfoAddressSpace, kInfoAddressSpace}, cpu{kInfoCpuSeconds, kInfoCpuSeconds};
            ::setrlimit(RLIMIT_AS, &as);
            ::setrlimit(RLIMIT_CPU, &cpu);
        }
        ::sigprocmask(SIG_SETMASK, &sig.child_mask(), nullptr);  // the mask survives exec
        ::execvp(argv[0], argv.data());
        int e = errno;
        (void)!::write(exec_w.get(), &e, sizeof e);
        ::_exit(127);
    }
    out_w.reset();
    err_w.reset();
    exec_w.reset();
    int exec_errno = 0;
    ssize_t got;
    do got = ::read(exec_r.get(), &exec_errno, sizeof exec_errno);
    while (got < 0 && errno == EINTR);

    ToolRun r;
    bool killed = false;
    std::array<pollfd, 2> fds{pollfd{out_r.get(), POLLIN, 0}, pollfd{err_r.get(), POLLIN, 0}};
    std::array<char, 65536> buf;
    while (fds[0].fd >= 0 || fds[1].fd >= 0) {
        if (StopSignals::received() && !killed) {
            ::kill(pid, SIGTERM);
            killed = true;
        }
        int n = ::ppoll(fds.data(), fds.size(), nullptr, &sig.wait_mask());
        if (n < 0) {
            if (errno == EINTR) continue;
            ::kill(pid, SIGKILL);
            break;
        }
        for (size_t i = 0; i < fds.size(); ++i) {
            if (fds[i].fd < 0 || fds[i].revents == 0) continue;
            ssize_t k = ::read(fds[i].fd, buf.data(), buf.size());
            if (k < 0 && errno == EINTR) continue;
            if (k <= 0) {
                fds[i].fd = -1;
                continue;
            }
            std::string_view chunk(buf.data(), static_cast<size_t>(k));
            if (i == 0) {
                if (on_out) on_out(chunk);
                if (keep_out && r.out.size() < kMaxJson) r.out.append(chunk);
            } else if (r.err.size() < kMaxStderr) {
                r.err.append(chunk.substr(0, kMaxStderr - r.err.size()));
            }
        }
    }
    while (::waitpid(pid, &r.status, 0) < 0)
        if (errno != EINTR) return fail_errno("waitpid {}", args[0]);
    if (exec_errno == ENOENT) return fail("{} was not found on PATH: {}", args[0], kInstallHint);
    if (exec_errno != 0) {
        errno = exec_errno;
        return fail_errno("cannot run {}", args[0]);
    }
    r.err = trimmed(std::move(r.err));
    return r;
}

std::string exit_text(int status) {
    if (WIFEXITED(status)) return fmt::format("exit status {}", WEXITSTATUS(status));
    if (WIFSIGNALED(status)) {
        if (WTERMSIG(status) == SIGXCPU || WTERMSIG(status) == SIGKILL)
            return fmt::format("killed by signal {} (over its {} s CPU limit?)", WTERMSIG(status), kInfoCpuSeconds);
        return fmt::format("killed by signal {}", WTERMSIG(status));
    }
    return "ended abnormally";
}

// ---- the temporary output ---------------------------------------------------------------

// A file beside DST (same file system, so the final rename is atomic), removed unless kept.
class TempOutput {
public:
    static Result<TempOutput> create(const fs::path& dst) {
        std::string tmpl = (dst.parent_path() / ("." + dst.filename().string() + ".kestrel-import-XXXXXX")).string();
        int fd = ::mkstemp(tmpl.data());
        if (fd < 0) return fail_errno("cannot create a temporary file beside '{}'", dst.string());
        UniqueFd owned(fd);
        // mkstemp makes it 0600; the image gets what a new file would (0666 less the umask).
        mode_t mask = ::umask(0);
        ::umask(mask);
        (void)::fchmod(fd, 0666 & ~mask);
        return TempOutput(tmpl);
    }
    TempOutput(TempOutput&& o) noexcept : path_(std::exchange(o.path_, {})) {}
    TempOutput& operator=(TempOutput&&) = delete;
    ~TempOutput() {
        if (!path_.empty()) ::unlink(path_.c_str());
    }
    const std::string& path() const { return path_; }
    void keep() { path_.clear(); }

private:
    explicit TempOutput(std::string p) : path_(std::move(p)) {}
    std::string path_;
};

// ---- progress ---------------------------------------------------------------------------

class ProgressBar {
public:
    explicit ProgressBar(bool on) : on_(on) {}
    void show(double pct) {
        if (!on_) return;
        int tenths = static_cast<int>(std::clamp(pct, 0.0, 100.0) * 10);
        if (tenths == shown_) return;
        shown_ = tenths;
        constexpr int kWidth = 40;
        int full = tenths * kWidth / 1000;
        std::string line = fmt::format("\rkestrel import: [{}{}] {:5.1f}%", std::string(static_cast<size_t>(full), '#'),
                                       std::string(static_cast<size_t>(kWidth - full), '.'), tenths / 10.0);
        (void)!::write(STDERR_FILENO, line.data(), line.size());
    }
    void end() {
        if (on_ && shown_ >= 0) (void)!::write(STDERR_FILENO, "\n", 1);
        shown_ = -1;
    }

private:
    bool on_;
    int shown_ = -1;
};

// ---- the steps --------------------------------------------------------------------------

Result<void> check_source_file(const std::string& src) {
    struct stat st;
    if (::stat(src.c_str(), &st) < 0) {
        if (errno == ENOENT) return fail("source '{}' does not exist", src);
        return fail_errno("cannot read source '{}'", src);
    }
    if (S_ISDIR(st.st_mode)) return fail("source '{}' is a directory", src);
    if (!S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode))
        return fail("source '{}' is neither a regular file nor a block device", src);
    UniqueFd fd(::open(src.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd) return fail_errno("cannot read source '{}'", src);
    return {};
}

Result<void> check_destination(const std::string& src, const std::string& dst, bool force) {
    struct stat d;
    if (::lstat(dst.c_str(), &d) < 0) {
        if (errno == ENOENT) return {};
        return fail_errno("cannot look at destination '{}'", dst);
    }
    if (!S_ISREG(d.st_mode))
        return fail("destination '{}' exists and is not a regular file; kestrel import only "
                    "replaces regular files", dst);
    struct stat s;
    if (::stat(src.c_str(), &s) == 0 && s.st_dev == d.st_dev && s.st_ino == d.st_ino)
        return fail("destination '{}' is the source itself", dst);
    if (!force) return fail("destination '{}' already exists (--force replaces it)", dst);
    return {};
}

Result<SourceImage> inspect(const std::string& src_abs, const std::string& src, const StopSignals& sig) {
    auto r = TRY(run_tool({kQemuImg, "info", "--backing-chain", "--output=json", "--", src_abs}, sig,
                          /*limited=*/true, /*keep_out=*/true, nullptr));
    if (StopSignals::received()) return fail("stopped by signal {}", StopSignals::received());
    if (!WIFEXITED(r.status) || WEXITSTATUS(r.status) != 0)
        return fail("source '{}' is not a disk image qemu-img can read ({}): {}", src, exit_text(r.status),
                    r.err.empty() ? "no message" : r.err);
    auto j = json::parse(r.out, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded()) return fail("source '{}': qemu-img info printed no valid JSON", src);
    return check_source_info(j, src);
}

Result<void> convert(const std::string& src_abs, const std::string& src, const SourceImage& img,
                     const std::string& tmp, bool progress, const StopSignals& sig) {
    std::vector<std::string> args{kQemuImg, "convert"};
    if (progress) args.push_back("-p");
    args.insert(args.end(), {"-f", img.format, "-O", "raw", "--", src_abs, tmp});
    ProgressParser parser;
    ProgressBar bar(progress);
    auto r = run_tool(args, sig, /*limited=*/false, /*keep_out=*/false, [&](std::string_view chunk) {
        if (auto pct = parser.feed(chunk)) bar.show(*pct);
    });
    bar.end();
    if (!r) return std::unexpected(r.error());
    if (StopSignals::received()) return fail("stopped by signal {}", StopSignals::received());
    if (!WIFEXITED(r->status) || WEXITSTATUS(r->status) != 0)
        return fail("converting '{}' failed ({}): {}", src, exit_text(r->status),
                    r->err.empty() ? "no message" : r->err);
    return {};
}

// Pads to whole sectors, makes the data durable, then puts it in DST's place.
Result<uint64_t> finish(TempOutput& tmp, const std::string& dst, const SourceImage& img) {
    UniqueFd fd(::open(tmp.path().c_str(), O_RDWR | O_CLOEXEC));
    if (!fd) return fail_errno("cannot reopen '{}'", tmp.path());
    struct stat st;
    if (::fstat(fd.get(), &st) < 0) return fail_errno("cannot stat '{}'", tmp.path());
    auto size = static_cast<uint64_t>(st.st_size);
    if (size < img.virtual_size)
        return fail("qemu-img wrote {} bytes, but the image is {} bytes", size, img.virtual_size);
    if (size % kSector != 0) {
        size += kSector - size % kSector;
        if (::ftruncate(fd.get(), static_cast<off_t>(size)) < 0)
            return fail_errno("cannot pad '{}' to {} bytes", tmp.path(), size);
    }
    if (::fsync(fd.get()) < 0) return fail_errno("fsync '{}'", tmp.path());
    if (::rename(tmp.path().c_str(), dst.c_str()) < 0)
        return fail_errno("cannot rename '{}' to '{}'", tmp.path(), dst);
    tmp.keep();
    UniqueFd dir(::open(fs::path(dst).parent_path().c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (dir) (void)::fsync(dir.get());
    return size;
}

Result<void> import_image(const ImportOptions& o, const StopSignals& sig) {
    TRY(check_source_file(o.source));
    TRY(check_destination(o.source, o.destination, o.force));
    // Absolute paths: qemu-img takes "name:rest" for a protocol (nbd:, json:...) unless the
    // name starts with '/', and "-x" for an option were it not for "--".
    std::error_code ec;
    const std::string src_abs = fs::absolute(o.source, ec).string();
    const fs::path dst_abs = fs::absolute(o.destination, ec);
    if (ec) return fail("cannot resolve '{}': {}", o.destination, ec.message());
    SourceImage img = TRY(inspect(src_abs, o.source, sig));
    TempOutput tmp = TRY(TempOutput::create(dst_abs));
    TRY(convert(src_abs, o.source, img, tmp.path(), o.progress, sig));
    uint64_t size = TRY(finish(tmp, dst_abs.string(), img));
    std::string also;
    for (const auto& f : img.reads) also += fmt::format(", reading '{}'", f);
    fmt::print("kestrel import: '{}' ({}{}) -> '{}', {} bytes{}\n", o.source, img.format, also, o.destination,
               size, size != img.virtual_size ? fmt::format(" (padded from {} to whole 512-byte sectors)",
                                                             img.virtual_size)
                                              : "");
    return {};
}

}  // namespace

Result<SourceImage> check_source_info(const json& chain, const std::string& source) {
    if (!chain.is_array() || chain.empty() || !chain[0].is_object())
        return fail("source '{}': qemu-img info gave no image description", source);
    const json& top = chain[0];
    SourceImage img;
    if (!top.contains("format") || !top["format"].is_string())
        return fail("source '{}': qemu-img info names no format", source);
    img.format = top["format"].get<std::string>();
    if (!top.contains("virtual-size") || !top["virtual-size"].is_number_unsigned())
        return fail("source '{}': qemu-img info gives no virtual size", source);
    img.virtual_size = top["virtual-size"].get<uint64_t>();
    if (img.virtual_size == 0) return fail("source '{}' is a disk of 0 bytes", source);

    // A .vmdk that qemu-img reads as raw data has no VMDK header: damaged or misnamed. As raw
    // it would "convert" into a copy of its own bytes, which no guest can use.
    const std::string name = lower(fs::path(source).filename().string());
    for (const auto& nf : kNamedFormats)
        if (name.ends_with(nf.suffix) && img.format == "raw")
            return fail("source '{}' is named like a {} image but qemu-img finds no {} header in it "
                        "(damaged, or not a {} image)", source, nf.label, nf.label, nf.label);

    std::vector<std::string> files;
    for (size_t i = 0; i < chain.size(); ++i) {
        const json& layer = chain[i];
        if (!layer.is_object()) return fail("source '{}': qemu-img info gave a malformed backing chain", source);
        if (layer.value("encrypted", false))
            return fail("source '{}' is encrypted; decrypt it first (qemu-img convert with its secret)", source);
        if (layer.contains("format-specific")) {
            const json& fsd = layer["format-specific"];
            if (fsd.contains("data") && fsd["data"].is_object()) {
                const json& data = fsd["data"];
                if (data.value("corrupt", false))
                    return fail("source '{}' is marked corrupt by qemu ({}); `qemu-img check -r all` may repair it",
                                source, layer.value("filename", source));
                if (data.contains("extents") && data["extents"].is_array())
                    for (const auto& e : data["extents"])
                        if (e.is_object() && e.contains("filename") && e["filename"].is_string())
                            files.push_back(e["filename"].get<std::string>());
            }
        }
        if (i > 0 && layer.contains("filename") && layer["filename"].is_string())
            files.push_back(layer["filename"].get<std::string>());
    }
    const std::string top_file = top.value("filename", std::string());
    for (const auto& f : files) {
        if (f == top_file) continue;  // a monolithic VMDK lists itself as its one extent
        struct stat st;
        if (::stat(f.c_str(), &st) < 0 || !S_ISREG(st.st_mode))
            return fail("source '{}' reads '{}' (a backing file or extent), which is not a regular file; "
                        "kestrel import only follows backing files and extents that are", source, f);
        if (std::ranges::find(img.reads, f) == img.reads.end()) img.reads.push_back(f);
    }
    return img;
}

std::optional<double> ProgressParser::feed(std::string_view chunk) {
    pending_.append(chunk);
    std::optional<double> latest;
    // Each report is "(P/100%)" ended by '\r' (and the last by "\r\n"); only complete ones count.
    for (;;) {
        size_t open = pending_.find('(');
        if (open == std::string::npos) {
            pending_.clear();
            break;
        }
        size_t close = pending_.find("/100%)", open);
        if (close == std::string::npos) {
            pending_.erase(0, open);
            if (pending_.size() > 64) pending_.clear();  // not progress output
            break;
        }
        std::string number = pending_.substr(open + 1, close - open - 1);
        char* end = nullptr;
        double v = std::strtod(number.c_str(), &end);
        if (end != number.c_str() && *end == '\0' && v >= 0 && v <= 100) latest = v;
        pending_.erase(0, close + 6);
    }
    return latest;
}

int run_import(const ImportOptions& o) {
    StopSignals sig;
    auto r = import_image(o, sig);
    if (r) return kImportOk;
    if (int s = StopSignals::received()) {
        log::error("import of '{}' stopped by signal {}; '{}' was not written", o.source, s, o.destination);
        return 128 + s;
    }
    log::error("import: {}", r.error().what());
    return kImportFailed;
}

}  // namespace kestrel
