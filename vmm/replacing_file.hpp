// ReplacingFile: a file written beside its final name (PATH.tmp) and renamed over it by
// commit() after an fsync, so PATH is either the old file or the whole new one; destroyed
// without commit(), the temporary file is removed. For state and memory files (snapshots,
// device state, snapshot-merge).
#pragma once

#include <cstdint>
#include <span>
#include <string>

#include "vmm/base/error.hpp"
#include "vmm/base/fd.hpp"

namespace kestrel {

class ReplacingFile {
public:
    static Result<ReplacingFile> create(std::string path);
    ReplacingFile(ReplacingFile&&) noexcept;
    ReplacingFile& operator=(ReplacingFile&&) = delete;
    ~ReplacingFile();

    int fd() const { return fd_.get(); }
    const std::string& tmp_path() const { return tmp_; }
    Result<void> write_all(std::span<const uint8_t> bytes);
    // fsync, then rename over the final name.
    Result<void> commit();

private:
    ReplacingFile(std::string path, std::string tmp, UniqueFd fd)
        : path_(std::move(path)), tmp_(std::move(tmp)), fd_(std::move(fd)) {}
    std::string path_, tmp_;
    UniqueFd fd_;
    bool done_ = false;
};

// The whole of `bytes` as the new `path`.
Result<void> write_file_replacing(const std::string& path, std::span<const uint8_t> bytes);

}  // namespace kestrel
