#include "devices/bus.hpp"

#include <algorithm>
#include <cstring>

namespace kestrel {

Result<void> Bus::insert(uint64_t base, uint64_t len, std::shared_ptr<BusDevice> dev) {
    uint64_t end;
    if (len == 0 || __builtin_add_overflow(base, len, &end))
        return fail("{} bus: bad range {:#x}+{:#x}", name_, base, len);
    for (auto& e : entries_)
        if (base < e.base + e.len && e.base < end)
            return fail("{} bus: range {:#x}+{:#x} overlaps {:#x}+{:#x}", name_, base, len, e.base,
                        e.len);
    auto pos = std::lower_bound(entries_.begin(), entries_.end(), base,
                                [](const Entry& e, uint64_t b) { return e.base < b; });
    entries_.insert(pos, Entry{base, len, std::move(dev)});
    return {};
}

const Bus::Entry* Bus::find(uint64_t addr, uint64_t size) const {
    auto it = std::upper_bound(entries_.begin(), entries_.end(), addr,
                               [](uint64_t a, const Entry& e) { return a < e.base; });
    if (it == entries_.begin()) return nullptr;
    --it;
    uint64_t off = addr - it->base;
    if (off >= it->len || size > it->len - off) return nullptr;
    return &*it;
}

bool Bus::read(uint64_t addr, std::span<uint8_t> data) const {
    const Entry* e = find(addr, data.size());
    if (!e) {
        std::memset(data.data(), 0xff, data.size());
        return false;
    }
    e->dev->read(addr - e->base, data);
    return true;
}

bool Bus::write(uint64_t addr, std::span<const uint8_t> data) const {
    const Entry* e = find(addr, data.size());
    if (!e) return false;
    e->dev->write(addr - e->base, data);
    return true;
}

}  // namespace kestrel
