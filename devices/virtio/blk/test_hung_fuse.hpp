// HungFuseFile: a backing store that hangs, for the tests of bounded quiesce and reset. A
// one-file FUSE file system served by a thread of the test process over the raw /dev/fuse
// protocol (no libfuse): lookups, attributes, open, flush and release are answered, but READs
// are held unanswered until release() — as a FUSE daemon or NFS server that stopped
// answering would leave them. The reader blocks in the kernel (an io_uring read of it sits in
// an io-wq worker waiting for the page, which no cancel interrupts). Destruction aborts the
// connection, which fails every held request, then unmounts. Needs root and /dev/fuse
// (available()). Test-only helper.
#pragma once

#include <dirent.h>
#include <fcntl.h>
#include <linux/fuse.h>
#include <poll.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "devices/virtio/blk/test_temp_file.hpp"

namespace kestrel::test {

class HungFuseFile {
public:
    static bool available() { return ::geteuid() == 0 && ::access("/dev/fuse", R_OK | W_OK) == 0; }

    explicit HungFuseFile(uint64_t size) : size_(size) {
        std::string tmpl = temp_root() + "/kestrel-fuse-XXXXXX";
        std::vector<char> buf(tmpl.begin(), tmpl.end());
        buf.push_back('\0');
        if (!::mkdtemp(buf.data())) return;
        dir_ = buf.data();
        fd_ = ::open("/dev/fuse", O_RDWR | O_CLOEXEC);
        if (fd_ < 0) return;
        std::string opts = "fd=" + std::to_string(fd_) + ",rootmode=40000,user_id=0,group_id=0";
        if (::mount("kestrel-hung", dir_.c_str(), "fuse", MS_NOSUID | MS_NODEV, opts.c_str()) != 0) return;
        mounted_ = true;
        server_ = std::thread([this] { serve(); });
    }

    ~HungFuseFile() {
        stop_.store(true);
        if (server_.joinable()) server_.join();
        // Closing the only /dev/fuse fd aborts the connection: held requests fail (ECONNABORTED),
        // so no reader stays blocked on us.
        if (fd_ >= 0) ::close(fd_);
        if (mounted_) ::umount2(dir_.c_str(), MNT_DETACH);
        if (!dir_.empty()) ::rmdir(dir_.c_str());
    }
    HungFuseFile(const HungFuseFile&) = delete;
    HungFuseFile& operator=(const HungFuseFile&) = delete;

    bool ok() const { return mounted_; }
    std::string path() const { return dir_ + "/disk.img"; }

    // READs received and not answered so far.
    size_t reads_held() const {
        std::lock_guard lk(mu_);
        return held_.size();
    }
    // Blocks until at least n READs are held, or `limit` passes; returns whether they are.
    bool wait_for_reads(size_t n, std::chrono::milliseconds limit) const {
        auto end = std::chrono::steady_clock::now() + limit;
        while (reads_held() < n) {
            if (std::chrono::steady_clock::now() >= end) return false;
            std::this_thread::sleep_for(std::chrono::milliseconds(5));
        }
        return true;
    }
    // Blocks until an io_uring worker thread of this process sleeps in the kernel (state D),
    // or `limit` passes; returns whether one does. An io_uring read of the file first queues
    // for an io-wq worker, where a cancel still removes it; only once a worker has taken it
    // and waits for the page the held READ would fill is it really stuck.
    static bool wait_for_blocked_io_worker(std::chrono::milliseconds limit) {
        auto end = std::chrono::steady_clock::now() + limit;
        for (;;) {
            if (io_worker_blocked()) return true;
            if (std::chrono::steady_clock::now() >= end) return false;
            std::this_thread::sleep_for(std::chrono::milliseconds(5));
        }
    }
    // Answers the held READs, and every later one, with bytes of value `fill`.
    void release(uint8_t fill) {
        std::lock_guard lk(mu_);
        fill_ = fill;
        released_ = true;
    }

private:
    static constexpr uint64_t kFileNode = 2;

    struct Held {
        uint64_t unique;
        uint64_t offset;
        uint32_t size;
    };

    static bool io_worker_blocked() {
        DIR* d = ::opendir("/proc/self/task");
        if (!d) return false;
        bool found = false;
        while (dirent* e = ::readdir(d)) {
            if (e->d_name[0] == '.') continue;
            std::ifstream f(std::string("/proc/self/task/") + e->d_name + "/stat");
            std::string stat;
            std::getline(f, stat);
            // "tid (comm) state ...": io-wq workers are named iou-wrk-<tid>.
            auto open = stat.find('('), close = stat.rfind(')');
            if (open == std::string::npos || close == std::string::npos || close + 2 >= stat.size()) continue;
            if (stat.compare(open + 1, 7, "iou-wrk") == 0 && stat[close + 2] == 'D') found = true;
        }
        ::closedir(d);
        return found;
    }

    void serve() {
        std::vector<uint8_t> in(FUSE_MIN_READ_BUFFER + (1 << 20));
        while (!stop_.load()) {
            answer_held();
            pollfd p{fd_, POLLIN, 0};
            if (::poll(&p, 1, 20) <= 0) continue;
            ssize_t n = ::read(fd_, in.data(), in.size());
            if (n < 0 && (errno == EINTR || errno == EAGAIN || errno == ENOENT)) continue;
            if (n < static_cast<ssize_t>(sizeof(fuse_in_header))) return;  // ENODEV: unmounted
            fuse_in_header h;
            std::memcpy(&h, in.data(), sizeof h);
            handle(h, in.data() + sizeof h);
        }
    }

    void reply(uint64_t unique, int error, const void* data = nullptr, size_t len = 0) {
        fuse_out_header o{static_cast<uint32_t>(sizeof o + len), error, unique};
        std::vector<uint8_t> out(sizeof o + len);
        std::memcpy(out.data(), &o, sizeof o);
        if (len) std::memcpy(out.data() + sizeof o, data, len);
        (void)!::write(fd_, out.data(), out.size());
    }

    fuse_attr attr(uint64_t node) const {
        fuse_attr a{};
        a.ino = node;
        a.nlink = 1;
        a.blksize = 4096;
        if (node == FUSE_ROOT_ID) {
            a.mode = S_IFDIR | 0755;
            a.nlink = 2;
        } else {
            a.mode = S_IFREG | 0644;
            a.size = size_;
            a.blocks = (size_ + 511) / 512;
        }
        return a;
    }

    void handle(const fuse_in_header& h, const uint8_t* arg) {
        switch (h.opcode) {
        case FUSE_INIT: {
            fuse_init_in in;
            std::memcpy(&in, arg, sizeof in);
            fuse_init_out out{};
            out.major = FUSE_KERNEL_VERSION;
            out.minor = std::min<uint32_t>(in.minor, FUSE_KERNEL_MINOR_VERSION);
            out.max_readahead = in.max_readahead;
            // ASYNC_READ: readahead goes out as background requests, so a reader that may not
            // block (io_uring's first, non-blocking attempt) gets EAGAIN instead of waiting.
            out.flags = FUSE_ASYNC_READ;
            out.max_background = 16;
            out.congestion_threshold = 12;
            out.max_write = 128 << 10;
            out.time_gran = 1;
            return reply(h.unique, 0, &out, sizeof out);
        }
        case FUSE_LOOKUP: {
            if (h.nodeid != FUSE_ROOT_ID || std::strcmp(reinterpret_cast<const char*>(arg), "disk.img") != 0)
                return reply(h.unique, -ENOENT);
            fuse_entry_out e{};
            e.nodeid = kFileNode;
            e.entry_valid = e.attr_valid = 3600;
            e.attr = attr(kFileNode);
            return reply(h.unique, 0, &e, sizeof e);
        }
        case FUSE_GETATTR: {
            fuse_attr_out a{};
            a.attr_valid = 3600;
            a.attr = attr(h.nodeid);
            return reply(h.unique, 0, &a, sizeof a);
        }
        case FUSE_OPEN:
        case FUSE_OPENDIR: {
            fuse_open_out o{};
            o.fh = 1;
            return reply(h.unique, 0, &o, sizeof o);
        }
        case FUSE_READ: {
            fuse_read_in r;
            std::memcpy(&r, arg, sizeof r);
            std::lock_guard lk(mu_);
            held_.push_back(Held{h.unique, r.offset, r.size});
            return;
        }
        case FUSE_FLUSH:
        case FUSE_RELEASE:
        case FUSE_RELEASEDIR:
        case FUSE_FSYNC:
            return reply(h.unique, 0);
        case FUSE_FORGET:
        case FUSE_BATCH_FORGET:
        case FUSE_INTERRUPT:  // the held READ stays held: a daemon that does not answer
            return;
        default:
            return reply(h.unique, -ENOSYS);
        }
    }

    void answer_held() {
        std::vector<Held> now;
        uint8_t fill;
        {
            std::lock_guard lk(mu_);
            if (!released_ || held_.empty()) return;
            now.swap(held_);
            fill = fill_;
        }
        for (const Held& r : now) {
            uint64_t len = r.offset >= size_ ? 0 : std::min<uint64_t>(r.size, size_ - r.offset);
            std::vector<uint8_t> data(len, fill);
            reply(r.unique, 0, data.data(), data.size());
        }
    }

    uint64_t size_;
    std::string dir_;
    int fd_ = -1;
    bool mounted_ = false;
    std::atomic<bool> stop_{false};
    std::thread server_;
    mutable std::mutex mu_;
    std::vector<Held> held_;
    bool released_ = false;
    uint8_t fill_ = 0;
};

}  // namespace kestrel::test
