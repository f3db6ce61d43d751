#include "devices/virtio/blk/image_lock.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <vector>

namespace kestrel::image_lock {

namespace {

constexpr unsigned bit(Perm p) { return 1u << static_cast<unsigned>(p); }

// What each lock byte means to someone who finds it held by another user.
constexpr const char* kHeldMeaning[kPermCount] = {
    "is reading it",  // consistent read
    "holds a write lock on it",
    "holds a write-unchanged lock on it",
    "holds a resize lock on it",
};
constexpr const char* kUnsharedMeaning[kPermCount] = {
    "does not let others read it",
    "is using it and lets nobody else write it (a read-only disk can share it)",
    "lets nobody else write it",
    "lets nobody else resize it",
};

Result<void> lock_byte(int fd, long offset) {
    struct flock fl {};
    fl.l_type = F_RDLCK;
    fl.l_whence = SEEK_SET;
    fl.l_start = offset;
    fl.l_len = 1;
    if (::fcntl(fd, F_OFD_SETLK, &fl) == 0) return {};
    return fail_errno("F_OFD_SETLK on byte {}", offset);
}

// True when another open file description holds any lock on the byte.
Result<bool> held_by_other(int fd, long offset) {
    struct flock fl {};
    fl.l_type = F_WRLCK;
    fl.l_whence = SEEK_SET;
    fl.l_start = offset;
    fl.l_len = 1;
    if (::fcntl(fd, F_OFD_GETLK, &fl) < 0) return fail_errno("F_OFD_GETLK on byte {}", offset);
    return fl.l_type != F_UNLCK;
}

bool same_file(const struct stat& a, const struct stat& b) {
    if (S_ISBLK(a.st_mode) && S_ISBLK(b.st_mode)) return a.st_rdev == b.st_rdev;
    return a.st_dev == b.st_dev && a.st_ino == b.st_ino;
}

std::string comm_of(const std::string& pid) {
    std::ifstream in("/proc/" + pid + "/comm");
    std::string name;
    std::getline(in, name);
    return name.empty() ? "?" : name;
}

}  // namespace

std::string other_holders(int fd) {
    struct stat want;
    if (::fstat(fd, &want) < 0) return {};
    const std::string self = std::to_string(::getpid());
    std::vector<std::string> found;
    DIR* proc = ::opendir("/proc");
    if (!proc) return {};
    while (dirent* p = ::readdir(proc)) {
        const std::string pid = p->d_name;
        if (pid.find_first_not_of("0123456789") != std::string::npos || pid == self) continue;
        const std::string fds = "/proc/" + pid + "/fd";
        DIR* dir = ::opendir(fds.c_str());
        if (!dir) continue;  // gone, or another user's process
        bool match = false;
        while (dirent* f = ::readdir(dir)) {
            struct stat st;
            if (f->d_name[0] == '.') continue;
            if (::stat((fds + "/" + f->d_name).c_str(), &st) == 0 && same_file(st, want)) {
                match = true;
                break;
            }
        }
        ::closedir(dir);
        if (match) found.push_back(fmt::format("{} (pid {})", comm_of(pid), pid));
        if (found.size() == 3) break;
    }
    ::closedir(proc);
    std::string out;
    for (const auto& f : found) out += (out.empty() ? "" : ", ") + f;
    return out;
}

Result<void> release(int fd) {
    struct flock fl {};
    fl.l_type = F_UNLCK;
    fl.l_whence = SEEK_SET;
    fl.l_start = kPermBase;
    fl.l_len = kSharedBase + kPermCount - kPermBase;
    if (::fcntl(fd, F_OFD_SETLK, &fl) == 0) return {};
    return fail_errno("F_OFD_SETLK F_UNLCK");
}

Result<void> acquire(int fd, const std::string& path, bool read_only) {
    const unsigned perm = bit(Perm::ConsistentRead) | (read_only ? 0 : bit(Perm::Write));
    const unsigned unshared = bit(Perm::Write);

    auto in_use = [&](const char* meaning) {
        std::string who = other_holders(fd);
        return fail("disk image '{}' is in use: another process{} {}", path,
                    who.empty() ? " (e.g. QEMU or kestrel)" : ", " + who + ",", meaning);
    };
    auto lock_error = [&](const Error& e) {
        // Someone holds an exclusive lock on our bytes: not QEMU or kestrel, but a user all
        // the same.
        if (e.sys_errno == EAGAIN || e.sys_errno == EACCES)
            return in_use("holds an exclusive lock on its QEMU lock bytes");
        return std::unexpected(context(e, fmt::format("cannot lock disk image '{}'", path)));
    };

    for (unsigned i = 0; i < kPermCount; ++i) {
        if (perm & (1u << i))
            if (auto r = lock_byte(fd, kPermBase + i); !r) return lock_error(r.error());
        if (unshared & (1u << i))
            if (auto r = lock_byte(fd, kSharedBase + i); !r) return lock_error(r.error());
    }
    // Checked after locking, as QEMU does: of two users starting together at least one sees
    // the other. Someone holding what we do not share (a writer) first: it says more.
    for (unsigned i = 0; i < kPermCount; ++i) {
        if ((unshared & (1u << i)) == 0) continue;
        auto held = held_by_other(fd, kPermBase + i);
        if (!held) return lock_error(held.error());
        if (*held) return in_use(kHeldMeaning[i]);
    }
    for (unsigned i = 0; i < kPermCount; ++i) {
        if ((perm & (1u << i)) == 0) continue;
        auto held = held_by_other(fd, kSharedBase + i);
        if (!held) return lock_error(held.error());
        if (*held) return in_use(kUnsharedMeaning[i]);
    }
    return {};
}

}  // namespace kestrel::image_lock
