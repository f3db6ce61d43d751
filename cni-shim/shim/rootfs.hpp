// A container's rootfs as a block device for the pod VM (issue 10 part 3, minimum): the
// snapshotter's mounts from CreateTaskRequest.rootfs are mounted on the bundle's rootfs
// directory (as containerd's runc shim does), copied into a fresh ext4 image with
// `mke2fs -d` sized from the tree, and unmounted again. The guest mounts the image
// read-only under an overlay with a tmpfs upper layer (PROTOCOL.md, rootfs `writable_layer`).
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "vmm/base/error.hpp"

namespace kestrel::shim {

struct RootfsMount {
    std::string type, source, target;
    std::vector<std::string> options;
};

struct MountArgs {
    unsigned long flags = 0;
    std::string data;  // options mount(2) passes to the filesystem, comma-joined
};

// mount(8)-style options to mount(2) flags + data. Refuses options with a comma or NUL.
Result<MountArgs> parse_mount_options(const std::vector<std::string>& options);

// Mounts each on `dir` in order. Types allowed: overlay, bind (or options bind/rbind), ext4,
// xfs, tmpfs; anything else is refused (the request is input, not a command). Returns how
// many mounts were made so the caller can undo them.
Result<int> mount_rootfs(const std::vector<RootfsMount>& mounts, const std::string& dir);
void unmount_all(const std::string& dir, int count);

struct TreeSize {
    std::uint64_t bytes = 0;
    std::uint64_t inodes = 0;
};
// Walks the tree without following symlinks or leaving its filesystem.
Result<TreeSize> measure_tree(const std::string& dir);
// Bytes for an ext4 image holding `t`: data + per-inode overhead + slack, whole MiB.
std::uint64_t ext4_image_bytes(const TreeSize& t);

// Creates `image` as ext4 populated from `dir` (mke2fs -d, no journal: the guest mounts it
// read-only). The message of a failure carries mke2fs's output.
Result<void> build_ext4_image(const std::string& dir, const std::string& image);

// Per-image cache (issue 10 part 3: the second container of an image must not rebuild it).
// A rootfs that is one overlay mount (containerd's overlayfs snapshotter) whose upper
// directory is still empty holds exactly its image's layers, named by the lowerdir list:
// that list is the cache key. Anything else (bind mounts of a writable snapshot, an upper
// layer with content, a layer directory that does not exist) is not cacheable. The key
// also covers each layer directory's inode and change time.
struct CacheableRootfs {
    std::string key;              // 16 hex digits
    std::vector<RootfsMount> lowers_only;  // mounts of just the image layers, read-only
};
std::optional<CacheableRootfs> cacheable_rootfs(const std::vector<RootfsMount>& mounts);

// Returns <cache_dir>/<key>.ext4, building it from `lowers_only` mounted on `mount_dir` when
// absent (built beside it and renamed into place, so a half-built image is never used). A
// hit sets the image's mtime to now: the cache's "last used" for prune_image_cache.
Result<std::string> cached_image(const CacheableRootfs& r, const std::string& cache_dir, const std::string& mount_dir);

// Whether some VMM has the image open as a disk. kestrel and QEMU each hold a shared OFD
// lock on the consistent-read permission byte (image_lock::kPermBase + ConsistentRead,
// devices/virtio/blk/image_lock.hpp) of every image they use, read-only or not.
Result<bool> image_in_use(int fd);

// Keeps the shared image cache from growing for ever: removes every <key>.ext4 last used
// (mtime) more than `keep` ago that no VMM has open, except `except` (the image a caller is
// about to use), and every <key>.ext4.tmp.<pid> whose builder process is gone. The mtime is
// checked again on the open file before the unlink, so an image a shim picks up meanwhile
// stays. Names of any other form are left alone. Never fails: problems are listed.
struct PruneResult {
    unsigned removed = 0;
    std::uint64_t removed_bytes = 0;
    unsigned kept_in_use = 0;  // old enough to go, but a VMM has it open
    std::vector<std::string> problems;
};
PruneResult prune_image_cache(const std::string& cache_dir, std::chrono::seconds keep, const std::string& except);

// Runs argv (no shell), returns its combined output (first 4 KiB) or fails with it.
Result<std::string> run_command(const std::vector<std::string>& argv);

}  // namespace kestrel::shim
