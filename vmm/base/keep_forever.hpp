#pragma once
// Objects that must never be freed: buffers the host kernel may still read or write (an io_uring
// request that did not complete when a device gave up waiting for it). They stay reachable from
// a never-destroyed list, so a leak checker (ASan's LeakSanitizer) does not report them.

#include <memory>
#include <mutex>
#include <vector>

namespace kestrel {

template <class T>
void keep_forever(std::shared_ptr<T> p) {
    static std::mutex mu;
    static auto* const kept = new std::vector<std::shared_ptr<T>>;
    std::lock_guard lk(mu);
    kept->push_back(std::move(p));
}

}  // namespace kestrel
