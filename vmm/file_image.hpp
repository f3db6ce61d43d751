// FileImage: a kernel or initrd file mapped read-only for the duration of loading.
#pragma once

#include <fcntl.h>
#include <sys/stat.h>

#include <span>
#include <string>

#include "vmm/base/error.hpp"
#include "vmm/base/fd.hpp"
#include "vmm/base/mapping.hpp"

namespace kestrel {

class FileImage {
public:
    static Result<FileImage> open(const std::string& path, std::string_view role) {
        int raw = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
        if (raw < 0) return fail_errno("cannot open {} '{}'", role, path);
        UniqueFd fd(raw);
        struct stat st;
        if (::fstat(fd.get(), &st) < 0) return fail_errno("cannot stat {} '{}'", role, path);
        if (!S_ISREG(st.st_mode)) return fail("{} '{}' is not a regular file", role, path);
        if (st.st_size == 0) return fail("{} '{}' is empty", role, path);
        auto map = Mapping::of_file_readonly(fd.get(), static_cast<size_t>(st.st_size));
        if (!map) return std::unexpected(context(map.error(), fmt::format("{} '{}'", role, path)));
        return FileImage(std::move(*map));
    }
    std::span<const uint8_t> bytes() const { return {map_.data(), map_.size()}; }

private:
    explicit FileImage(Mapping m) : map_(std::move(m)) {}
    Mapping map_;
};

}  // namespace kestrel
