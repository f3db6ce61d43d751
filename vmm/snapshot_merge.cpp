#include "vmm/snapshot_merge.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <vector>

#include "migration/memory_state.hpp"
#include "migration/state_stream.hpp"
#include "vmm/base/fd.hpp"
#include "vmm/file_image.hpp"
#include "vmm/replacing_file.hpp"

namespace kestrel {

namespace {

Result<UniqueFd> open_sized(const std::string& path, int flags, uint64_t size, const char* what) {
    UniqueFd fd(::open(path.c_str(), flags | O_CLOEXEC));
    if (!fd) return fail_errno("{} '{}'", what, path);
    struct stat st {};
    if (::fstat(fd.get(), &st) != 0) return fail_errno("{} '{}'", what, path);
    if (!S_ISREG(st.st_mode)) return fail("{} '{}' is not a regular file", what, path);
    if (static_cast<uint64_t>(st.st_size) != size)
        return fail("{} '{}' has {} bytes; the snapshot's guest RAM is {}", what, path, st.st_size, size);
    return fd;
}

}  // namespace

Result<MergeResult> merge_snapshot(const std::string& diff_state, const std::string& diff_mem,
                                   const std::string& base_mem, const std::string& out_state) {
    using namespace migration;
    auto image = TRY(FileImage::open(diff_state, "Diff state file"));
    auto file = StateFile::parse(image.bytes());
    if (!file) return std::unexpected(context(file.error(), fmt::format("'{}'", diff_state)));
    const Section* ms = file->find(kMemorySection);
    const Section* ds = file->find(kMemoryDiffSection);
    if (!ms) return fail("'{}' is not a snapshot state file (no '{}' section)", diff_state, kMemorySection);
    if (!ds) return fail("'{}' is a Full snapshot, not a Diff: there is nothing to merge", diff_state);
    const auto layout = TRY(decode_memory(*ms));
    const auto pages = TRY(decode_memory_diff(*ds, layout));
    const uint64_t total = total_size(layout);
    auto src = TRY(open_sized(diff_mem, O_RDONLY, total, "Diff memory file"));
    auto dst = TRY(open_sized(base_mem, O_RDWR, total, "base memory file"));

    // OUT_STATE: every section but the page list, in order.
    StateWriter w(file->kestrel_version, file->cpu_summary);
    for (const auto& s : file->sections)
        if (s.id != kMemoryDiffSection) w.section(s.id, s.version).put_bytes(s.payload);
    const auto out = TRY(std::move(w).finish());

    MergeResult r;
    std::vector<uint8_t> page(kStatePage);
    uint64_t region_offset = 0;
    for (size_t ri = 0; ri < layout.size(); ++ri) {
        const uint64_t npages = layout[ri].size / kStatePage;
        for (uint64_t p = 0; p < npages; ++p) {
            if (!(pages[ri][p / 64] >> (p % 64) & 1)) continue;
            const auto off = static_cast<off_t>(region_offset + p * kStatePage);
            if (::pread(src.get(), page.data(), page.size(), off) != static_cast<ssize_t>(page.size()))
                return fail_errno("reading page {:#x} of '{}'", off, diff_mem);
            if (::pwrite(dst.get(), page.data(), page.size(), off) != static_cast<ssize_t>(page.size()))
                return fail_errno("writing page {:#x} of '{}' (it is now partly merged: merge again)", off, base_mem);
            ++r.pages;
        }
        region_offset += layout[ri].size;
    }
    if (::fsync(dst.get()) != 0) return fail_errno("fsync of '{}'", base_mem);

    TRY(write_file_replacing(out_state, out));
    return r;
}

}  // namespace kestrel
