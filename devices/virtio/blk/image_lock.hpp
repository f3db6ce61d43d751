// Image locking the way QEMU does it (block/file-posix.c, raw_apply_lock_bytes and
// raw_check_lock_bytes), so kestrel and QEMU each refuse an image the other is using.
//
// Every user of an image holds shared open-file-description locks (fcntl F_OFD_SETLK,
// F_RDLCK) on single bytes: byte 100+p says "I hold permission p", byte 200+p says "I do
// not let others have p". A user then tests (F_OFD_GETLK, F_WRLCK, which conflicts with any
// other holder) byte 200+p for each p it holds and byte 100+p for each p it does not share.
// No byte ever takes an exclusive lock, so the state is only ever "someone holds this".
// Byte 0 and the bytes below 100 are libvirt's; the file's contents are not touched.
//
// kestrel asks what QEMU's virtio-blk asks for by default (share-rw=off): a read-write disk
// holds consistent-read + write and does not share write; a read-only disk holds
// consistent-read and does not share write either (a guest reading an image someone else is
// writing sees a torn file system). So two read-only users share an image, and a writer
// excludes everyone else, read-only users included.
//
// OFD locks belong to the open file description: they are released when the last fd of it
// closes (an io_uring registered file counts, see ring_file.hpp), and two opens of one file
// in one process conflict with each other, unlike classic POSIX record locks.
#pragma once

#include <string>

#include "vmm/base/error.hpp"

namespace kestrel::image_lock {

// QEMU's permission bits (include/block/block-common.h, BLK_PERM_*): bit numbers, which are
// also the offsets from the two lock bases.
enum class Perm : unsigned { ConsistentRead = 0, Write = 1, WriteUnchanged = 2, Resize = 3 };
inline constexpr unsigned kPermCount = 4;
inline constexpr long kPermBase = 100;    // RAW_LOCK_PERM_BASE: "I hold it"
inline constexpr long kSharedBase = 200;  // RAW_LOCK_SHARED_BASE: "I do not share it"

// Takes the locks for a disk opened read-only or read-write on `fd` and checks that no other
// user conflicts. On failure the message names the image, what conflicts and, when /proc
// shows it, which process has the image open. The locks go with the fd's last close.
Result<void> acquire(int fd, const std::string& path, bool read_only);

// Drops every lock acquire() took on `fd` (a live migration hands the image to the destination
// kestrel; acquire() takes them again if it comes back).
Result<void> release(int fd);

// "qemu-system-x86 (pid 1234)" for the other processes that have the file behind `fd` open,
// as far as /proc lets this process see; empty when none is visible.
std::string other_holders(int fd);

}  // namespace kestrel::image_lock
