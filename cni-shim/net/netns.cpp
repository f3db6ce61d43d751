#include "cni-shim/net/netns.hpp"

#include <fcntl.h>
#include <linux/nsfs.h>
#include <sys/ioctl.h>

namespace kestrel::cninet {

std::expected<NetnsFile, NetnsOpenError> open_netns(const std::string& path) {
    UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd) {
        int e = errno;
        return std::unexpected(NetnsOpenError{
            fmt::format("network namespace '{}': open: {}", path, std::strerror(e)), e == ENOENT});
    }
    // NS_GET_NSTYPE (Linux 4.11, ioctl_ns(2)) tells a namespace file from any other file,
    // so a wrong path is refused here rather than by a puzzling EINVAL from setns.
    int type = ::ioctl(fd.get(), NS_GET_NSTYPE);
    if (type < 0) {
        int e = errno;
        return std::unexpected(NetnsOpenError{
            fmt::format("'{}' is not a namespace file (NS_GET_NSTYPE: {})", path, std::strerror(e)), false});
    }
    if (type != CLONE_NEWNET)
        return std::unexpected(NetnsOpenError{fmt::format("'{}' is a namespace but not a network namespace", path), false});
    return NetnsFile{std::move(fd), path};
}

Result<void> join_netns(const NetnsFile& ns) {
    if (::setns(ns.fd.get(), CLONE_NEWNET) < 0)
        return fail_errno("setns into network namespace '{}' (needs CAP_SYS_ADMIN)", ns.path);
    return {};
}

}  // namespace kestrel::cninet
