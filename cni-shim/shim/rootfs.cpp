#include "cni-shim/shim/rootfs.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <map>
#include <string_view>

#include <fmt/ranges.h>

// The lock-byte layout only (a header of constants): the shim links none of the VMM.
#include "devices/virtio/blk/image_lock.hpp"
#include "vmm/base/fd.hpp"

namespace kestrel::shim {

Result<MountArgs> parse_mount_options(const std::vector<std::string>& options) {
    static const std::map<std::string, std::pair<bool, unsigned long>> kFlags = {
        {"ro", {true, MS_RDONLY}},      {"rw", {false, MS_RDONLY}},   {"bind", {true, MS_BIND}},
        {"rbind", {true, MS_BIND | MS_REC}}, {"nosuid", {true, MS_NOSUID}}, {"suid", {false, MS_NOSUID}},
        {"nodev", {true, MS_NODEV}},    {"dev", {false, MS_NODEV}},   {"noexec", {true, MS_NOEXEC}},
        {"exec", {false, MS_NOEXEC}},   {"noatime", {true, MS_NOATIME}}, {"relatime", {true, MS_RELATIME}},
        {"defaults", {false, 0}},
    };
    MountArgs a;
    for (const auto& o : options) {
        if (o.empty() || o.find(',') != std::string::npos || o.find('\0') != std::string::npos || o.size() > 4096) {
            return bad_request("mount option '{}' is empty or holds a comma/NUL", o);
        }
        auto it = kFlags.find(o);
        if (it != kFlags.end()) {
            if (it->second.first) a.flags |= it->second.second;
            else a.flags &= ~it->second.second;
            continue;
        }
        if (!a.data.empty()) a.data += ',';
        a.data += o;
    }
    return a;
}

Result<int> mount_rootfs(const std::vector<RootfsMount>& mounts, const std::string& dir) {
    int done = 0;
    for (const auto& m : mounts) {
        MountArgs a = TRY(parse_mount_options(m.options));
        std::string type = m.type;
        if (type == "bind") a.flags |= MS_BIND;
        bool bind = (a.flags & MS_BIND) != 0;
        if (!bind && type != "overlay" && type != "ext4" && type != "xfs" && type != "tmpfs") {
            unmount_all(dir, done);
            return bad_request("rootfs mount type '{}' is not supported", type);
        }
        if (m.source.empty() || m.source.size() > 4095) {
            unmount_all(dir, done);
            return bad_request("rootfs mount source is empty or too long");
        }
        int r = ::mount(m.source.c_str(), dir.c_str(), bind ? nullptr : type.c_str(), a.flags,
                        a.data.empty() ? nullptr : a.data.c_str());
        if (r != 0) {
            auto e = fail_errno("mount {} ({}) on {}", m.source, type, dir);
            unmount_all(dir, done);
            return e;
        }
        ++done;
        // A read-only bind needs a second, remounting call (mount(2) "MS_BIND").
        if (bind && (a.flags & MS_RDONLY) && ::mount(nullptr, dir.c_str(), nullptr, MS_REMOUNT | MS_BIND | MS_RDONLY, nullptr) != 0) {
            auto e = fail_errno("remount {} read-only", dir);
            unmount_all(dir, done);
            return e;
        }
    }
    return done;
}

void unmount_all(const std::string& dir, int count) {
    for (int i = 0; i < count; ++i) ::umount2(dir.c_str(), MNT_DETACH);
}

Result<TreeSize> measure_tree(const std::string& dir) {
    namespace fs = std::filesystem;
    TreeSize t{0, 1};
    struct stat root {};
    if (::lstat(dir.c_str(), &root) != 0) return fail_errno("{}", dir);
    std::error_code ec;
    fs::recursive_directory_iterator it(dir, fs::directory_options::none, ec), end;
    if (ec) return fail("{}: {}", dir, ec.message());
    for (; it != end; it.increment(ec)) {
        if (ec) return fail("walking {}: {}", dir, ec.message());
        struct stat st {};
        if (::lstat(it->path().c_str(), &st) != 0) continue;
        if (S_ISDIR(st.st_mode) && st.st_dev != root.st_dev) it.disable_recursion_pending();
        ++t.inodes;
        if (S_ISREG(st.st_mode) || S_ISLNK(st.st_mode)) t.bytes += static_cast<std::uint64_t>(st.st_size);
    }
    return t;
}

std::uint64_t ext4_image_bytes(const TreeSize& t) {
    // Each file rounds up to a 4 KiB block and needs a 256-byte inode; 25 % + 16 MiB covers
    // directories, extent blocks and ext4's own metadata for small trees.
    std::uint64_t b = t.bytes + t.inodes * (4096 + 256);
    b += b / 4 + (16u << 20);
    const std::uint64_t mib = 1u << 20;
    return (b + mib - 1) / mib * mib;
}

Result<std::string> run_command(const std::vector<std::string>& argv) {
    std::vector<char*> av;
    for (auto& a : argv) av.push_back(const_cast<char*>(a.c_str()));
    av.push_back(nullptr);
    int p[2];
    if (::pipe2(p, O_CLOEXEC) != 0) return fail_errno("pipe");
    pid_t pid = ::fork();
    if (pid < 0) return fail_errno("fork");
    if (pid == 0) {
        int null = ::open("/dev/null", O_RDONLY);
        if (null >= 0) ::dup2(null, 0);
        ::dup2(p[1], 1);
        ::dup2(p[1], 2);
        ::execvp(av[0], av.data());
        ::_exit(127);
    }
    ::close(p[1]);
    std::string out;
    char buf[4096];
    for (;;) {
        ssize_t n = ::read(p[0], buf, sizeof buf);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        if (out.size() < 4096) out.append(buf, static_cast<std::size_t>(n));
    }
    ::close(p[0]);
    int st = 0;
    while (::waitpid(pid, &st, 0) < 0 && errno == EINTR) {}
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        return fail("{} failed (wait status {:#x}): {}", argv[0], st, out);
    }
    return out;
}

std::optional<CacheableRootfs> cacheable_rootfs(const std::vector<RootfsMount>& mounts) {
    if (mounts.size() != 1 || mounts[0].type != "overlay") return std::nullopt;
    std::string lower, upper;
    for (const auto& o : mounts[0].options) {
        if (o.starts_with("lowerdir=")) lower = o.substr(9);
        else if (o.starts_with("upperdir=")) upper = o.substr(9);
    }
    if (lower.empty() || lower.find(',') != std::string::npos || lower.front() != '/') return std::nullopt;
    if (!upper.empty()) {
        std::error_code ec;
        if (!std::filesystem::is_empty(upper, ec) || ec) return std::nullopt;
    }
    std::uint64_t h = 0xcbf29ce484222325ULL;  // FNV-1a 64
    auto mix = [&](std::string_view bytes) {
        for (unsigned char ch : bytes) {
            h ^= ch;
            h *= 0x100000001b3ULL;
        }
    };
    mix(lower);
    // Paths alone could name other layers after containerd's root was wiped and its
    // snapshot ids counted from 1 again: each layer directory's inode and change time go
    // into the key too (a committed layer is never changed afterwards).
    std::size_t start = 0;
    while (start <= lower.size()) {
        std::size_t end = lower.find(':', start);
        std::string dir = lower.substr(start, end == std::string::npos ? std::string::npos : end - start);
        struct stat st {};
        if (dir.empty() || ::stat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) return std::nullopt;
        mix(fmt::format("|{}:{}:{}.{}", st.st_dev, st.st_ino, st.st_ctim.tv_sec, st.st_ctim.tv_nsec));
        if (end == std::string::npos) break;
        start = end + 1;
    }
    CacheableRootfs r;
    r.key = fmt::format("{:016x}", h);
    if (lower.find(':') == std::string::npos) {
        // overlayfs wants two lower layers when there is no upper: one layer is a bind.
        r.lowers_only.push_back({"bind", lower, "", {"bind", "ro"}});
    } else {
        r.lowers_only.push_back({"overlay", "overlay", "", {"ro", "lowerdir=" + lower}});
    }
    return r;
}

Result<std::string> cached_image(const CacheableRootfs& r, const std::string& cache_dir, const std::string& mount_dir) {
    std::string path = fmt::format("{}/{}.ext4", cache_dir, r.key);
    if (::access(path.c_str(), R_OK) == 0) {
        ::utimensat(AT_FDCWD, path.c_str(), nullptr, 0);  // last used: now (a failure only ages it)
        return path;
    }
    std::error_code ec;
    std::filesystem::create_directories(cache_dir, ec);
    if (ec) return fail("mkdir {}: {}", cache_dir, ec.message());
    int n = TRY(mount_rootfs(r.lowers_only, mount_dir));
    std::string tmp = fmt::format("{}.tmp.{}", path, ::getpid());
    auto built = build_ext4_image(mount_dir, tmp);
    unmount_all(mount_dir, n);
    if (!built) return std::unexpected(built.error());
    if (::rename(tmp.c_str(), path.c_str()) != 0) {
        auto e = fail_errno("rename {}", path);
        ::unlink(tmp.c_str());
        return e;
    }
    return path;
}

Result<bool> image_in_use(int fd) {
    struct flock fl{};
    fl.l_type = F_WRLCK;  // conflicts with any other holder's shared lock
    fl.l_whence = SEEK_SET;
    fl.l_start = image_lock::kPermBase + static_cast<long>(image_lock::Perm::ConsistentRead);
    fl.l_len = 1;
    if (::fcntl(fd, F_OFD_GETLK, &fl) != 0) return fail_errno("F_OFD_GETLK");
    return fl.l_type != F_UNLCK;
}

namespace {

bool is_hex_key(std::string_view s) {
    return s.size() == 16 && s.find_first_not_of("0123456789abcdef") == std::string_view::npos;
}

}  // namespace

PruneResult prune_image_cache(const std::string& cache_dir, std::chrono::seconds keep, const std::string& except) {
    PruneResult res;
    std::error_code ec;
    std::filesystem::directory_iterator it(cache_dir, ec);
    if (ec) {
        if (ec != std::errc::no_such_file_or_directory) res.problems.push_back(fmt::format("{}: {}", cache_dir, ec.message()));
        return res;
    }
    const std::string except_name = except.empty() ? "" : std::filesystem::path(except).filename().string();
    const auto now = std::chrono::system_clock::now();
    auto old = [&](const struct stat& st) {
        auto mtime = std::chrono::system_clock::time_point(
            std::chrono::duration_cast<std::chrono::system_clock::duration>(
                std::chrono::seconds(st.st_mtim.tv_sec) + std::chrono::nanoseconds(st.st_mtim.tv_nsec)));
        return now - mtime > keep;
    };
    // increment(ec), not range-for: a directory that fails mid-read must not throw.
    for (; it != std::filesystem::directory_iterator(); it.increment(ec)) {
        if (ec) {
            res.problems.push_back(fmt::format("{}: {}", cache_dir, ec.message()));
            break;
        }
        const std::string name = it->path().filename().string();
        const std::string path = it->path().string();
        if (name == except_name) continue;
        const auto dot = name.find('.');
        if (dot == std::string::npos || !is_hex_key(std::string_view(name).substr(0, dot))) continue;
        const std::string_view rest = std::string_view(name).substr(dot);
        struct stat st{};
        if (::lstat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) continue;
        if (constexpr std::string_view kTmp = ".ext4.tmp."; rest.starts_with(kTmp)) {
            // A build in progress, or the leftover of a shim that died building.
            const std::string pid_text(rest.substr(kTmp.size()));
            if (pid_text.empty() || pid_text.size() > 9 || pid_text.find_first_not_of("0123456789") != std::string::npos) continue;
            const pid_t pid = static_cast<pid_t>(std::stol(pid_text));
            if (pid > 0 && (::kill(pid, 0) == 0 || errno != ESRCH)) continue;
            if (::unlink(path.c_str()) == 0) {
                ++res.removed;
                res.removed_bytes += static_cast<std::uint64_t>(st.st_size);
            }
            continue;
        }
        if (rest != ".ext4" || !old(st)) continue;
        UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
        if (!fd) continue;  // gone meanwhile
        auto busy = image_in_use(fd.get());
        if (!busy) {
            res.problems.push_back(fmt::format("{}: {}", path, busy.error().message));
            continue;
        }
        if (*busy) {
            ++res.kept_in_use;
            continue;
        }
        // Picked up since the directory was read (cached_image touched it)? Then it stays.
        struct stat now_st{};
        if (::fstat(fd.get(), &now_st) != 0 || !old(now_st) || now_st.st_ino != st.st_ino) continue;
        if (::unlink(path.c_str()) != 0) {
            res.problems.push_back(fmt::format("unlink {}: {}", path, std::strerror(errno)));
            continue;
        }
        ++res.removed;
        res.removed_bytes += static_cast<std::uint64_t>(now_st.st_size);
    }
    return res;
}

Result<void> build_ext4_image(const std::string& dir, const std::string& image) {
    TreeSize t = TRY(measure_tree(dir));
    std::uint64_t bytes = ext4_image_bytes(t);
    ::unlink(image.c_str());
    {
        UniqueFd f(::open(image.c_str(), O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0600));
        if (!f || ::ftruncate(f.get(), static_cast<off_t>(bytes)) != 0) return fail_errno("create {}", image);
    }
    auto r = run_command({"mke2fs", "-q", "-F", "-t", "ext4", "-O", "^has_journal", "-N",
                          std::to_string(t.inodes + 1024), "-d", dir, image});
    if (!r) {
        ::unlink(image.c_str());
        return std::unexpected(r.error());
    }
    return {};
}

}  // namespace kestrel::shim
