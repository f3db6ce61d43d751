#include "vmm/replacing_file.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <utility>

namespace kestrel {

Result<ReplacingFile> ReplacingFile::create(std::string path) {
    std::string tmp = path + ".tmp";
    UniqueFd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
    if (!fd) return fail_errno("cannot create '{}'", tmp);
    return ReplacingFile(std::move(path), std::move(tmp), std::move(fd));
}

ReplacingFile::ReplacingFile(ReplacingFile&& o) noexcept
    : path_(std::move(o.path_)), tmp_(std::move(o.tmp_)), fd_(std::move(o.fd_)), done_(std::exchange(o.done_, true)) {}

ReplacingFile::~ReplacingFile() {
    if (!done_) ::unlink(tmp_.c_str());
}

Result<void> ReplacingFile::write_all(std::span<const uint8_t> bytes) {
    for (size_t done = 0; done < bytes.size();) {
        ssize_t n = ::write(fd_.get(), bytes.data() + done, bytes.size() - done);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return fail_errno("writing '{}'", tmp_);
        done += static_cast<size_t>(n);
    }
    return {};
}

Result<void> ReplacingFile::commit() {
    if (::fsync(fd_.get()) != 0 || ::rename(tmp_.c_str(), path_.c_str()) != 0) return fail_errno("saving '{}'", path_);
    done_ = true;
    return {};
}

Result<void> write_file_replacing(const std::string& path, std::span<const uint8_t> bytes) {
    auto f = TRY(ReplacingFile::create(path));
    TRY(f.write_all(bytes));
    return f.commit();
}

}  // namespace kestrel
