#include "vmm/vm_config.hpp"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <fstream>
#include <sstream>

namespace kestrel {

Result<uint64_t> parse_memory_size(std::string_view s) {
    uint64_t n = 0;
    auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), n);
    if (ec != std::errc() || p == s.data())
        return fail("memory size '{}' is not a number (examples: 512M, 2G)", s);
    std::string_view suffix(p, static_cast<size_t>(s.data() + s.size() - p));
    unsigned shift;
    if (suffix.empty() || suffix == "M" || suffix == "m" || suffix == "MiB") shift = 20;
    else if (suffix == "K" || suffix == "k" || suffix == "KiB") shift = 10;
    else if (suffix == "G" || suffix == "g" || suffix == "GiB") shift = 30;
    else return fail("memory size '{}' has an unknown suffix '{}' (use K, M or G)", s, suffix);
    if (n > (uint64_t{1} << 40) >> shift) return fail("memory size '{}' is above 1 TiB", s);
    uint64_t bytes = n << shift;
    if (bytes % (1u << 20)) return fail("memory size '{}' is not a whole number of MiB", s);
    if (bytes < (16u << 20)) return fail("memory size '{}' is below the 16 MiB minimum", s);
    return bytes;
}

Result<SerialTarget> parse_serial(std::string_view s) {
    if (s == "stdio") return SerialTarget{SerialTarget::Kind::Stdio, {}};
    if (s == "none") return SerialTarget{SerialTarget::Kind::None, {}};
    if (s.starts_with("file:") && s.size() > 5)
        return SerialTarget{SerialTarget::Kind::File, std::string(s.substr(5))};
    return fail("serial target '{}' is not one of stdio, none, file:PATH", s);
}

namespace {

std::vector<std::string_view> split(std::string_view s, char sep) {
    std::vector<std::string_view> out;
    size_t start = 0;
    for (size_t i = 0; i <= s.size(); ++i)
        if (i == s.size() || s[i] == sep) {
            out.push_back(s.substr(start, i - start));
            start = i + 1;
        }
    return out;
}

// "key=value" -> (key, value); a bare word -> (word, nullopt).
std::pair<std::string_view, std::optional<std::string_view>> key_value(std::string_view item) {
    auto eq = item.find('=');
    if (eq == std::string_view::npos) return {item, std::nullopt};
    return {item.substr(0, eq), item.substr(eq + 1)};
}

template <class T>
Result<T> parse_uint(std::string_view what, std::string_view v, T lo, T hi) {
    T n{};
    auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), n);
    if (ec != std::errc() || p != v.data() + v.size() || n < lo || n > hi)
        return fail("{} '{}' is not a number from {} to {}", what, v, lo, hi);
    return n;
}

Result<std::array<uint8_t, 6>> parse_mac(std::string_view v) {
    auto parts = split(v, ':');
    std::array<uint8_t, 6> mac{};
    if (parts.size() != 6) return fail("mac '{}' is not six hex bytes like 52:54:00:12:34:56", v);
    for (size_t i = 0; i < 6; ++i) {
        unsigned b = 0;
        auto [p, ec] = std::from_chars(parts[i].data(), parts[i].data() + parts[i].size(), b, 16);
        if (ec != std::errc() || p != parts[i].data() + parts[i].size() || parts[i].size() != 2)
            return fail("mac '{}' is not six hex bytes like 52:54:00:12:34:56", v);
        mac[i] = static_cast<uint8_t>(b);
    }
    if (mac[0] & 1) return fail("mac '{}' is a multicast address", v);
    return mac;
}

}  // namespace

bool valid_id(std::string_view id) {
    if (id.empty() || id.size() > 64) return false;
    for (char c : id)
        if (!std::isalnum(static_cast<unsigned char>(c)) && c != '_' && c != '-') return false;
    return true;
}

Result<DiskConfig> parse_disk(std::string_view s) {
    auto items = split(s, ',');
    DiskConfig d;
    d.path = std::string(items[0]);
    if (d.path.empty()) return fail("--disk '{}': the image path comes first", s);
    for (size_t i = 1; i < items.size(); ++i) {
        auto [k, v] = key_value(items[i]);
        if (k == "ro" && !v) d.read_only = true;
        else if (k == "direct" && !v) d.direct = true;
        else if (k == "serial" && v) {
            if (v->size() > 20) return fail("--disk serial '{}' is longer than 20 bytes", *v);
            d.serial = std::string(*v);
        } else if (k == "queues" && v) d.queues = TRY(parse_uint<uint16_t>("--disk queues", *v, 1, 64));
        else if (k == "id" && v && valid_id(*v)) d.id = std::string(*v);
        else if (k == "id") return fail("--disk id '{}' is not 1-64 letters, digits, '_' or '-'", v.value_or(""));
        else return fail("--disk: unknown option '{}' (known: ro, direct, serial=S, queues=N, id=ID)", items[i]);
    }
    return d;
}

Result<NetConfig> parse_net(std::string_view s) {
    NetConfig n;
    for (auto item : split(s, ',')) {
        auto [k, v] = key_value(item);
        if (k == "tap" && v && !v->empty()) {
            if (v->size() >= 16) return fail("--net tap name '{}' is longer than 15 bytes", *v);
            n.tap = std::string(*v);
        } else if (k == "fd" && v) n.fd = TRY(parse_uint<int>("--net fd", *v, 0, 1 << 20));
        else if (k == "mac" && v) n.mac = TRY(parse_mac(*v));
        else if (k == "id" && v && valid_id(*v)) n.id = std::string(*v);
        else if (k == "id") return fail("--net id '{}' is not 1-64 letters, digits, '_' or '-'", v.value_or(""));
        else return fail("--net: unknown option '{}' (known: tap=NAME, fd=N, mac=MAC, id=ID)", item);
    }
    if (n.tap.empty() == (n.fd < 0))
        return fail("--net '{}': give exactly one of tap=NAME and fd=N", s);
    return n;
}

Result<VsockConfig> parse_vsock(std::string_view s) {
    VsockConfig c;
    bool have_cid = false;
    for (auto item : split(s, ',')) {
        auto [k, v] = key_value(item);
        if (k == "cid" && v) {
            // CIDs 0-2 are the hypervisor, reserved and the host (virtio 1.2 §5.10.4).
            c.cid = TRY(parse_uint<uint32_t>("--vsock cid", *v, 3, 0xfffffffe));
            have_cid = true;
        } else if (k == "socket" && v && !v->empty()) c.socket = std::string(*v);
        else return fail("--vsock: unknown option '{}' (known: cid=N, socket=PATH)", item);
    }
    if (!have_cid || c.socket.empty()) return fail("--vsock '{}': cid=N and socket=PATH are required", s);
    return c;
}

std::vector<ConfigItem> open_order(const VmConfig& cfg) {
    using K = ConfigItem::Kind;
    std::vector<ConfigItem> out;
    auto add = [&](ConfigItem item) {
        if (std::find(out.begin(), out.end(), item) == out.end()) out.push_back(item);
    };
    auto named = [&](const ConfigItem& item) {
        switch (item.kind) {
        case K::Initrd: return !cfg.initrd.empty();
        case K::Disk: return item.index < cfg.disks.size();
        case K::Net: return item.index < cfg.nets.size();
        case K::Vsock: return cfg.vsock.has_value();
        default: return true;
        }
    };
    for (const auto& item : cfg.order)
        if (named(item)) add(item);
    add({K::Kernel});
    if (!cfg.initrd.empty()) add({K::Initrd});
    for (size_t i = 0; i < cfg.disks.size(); ++i) add({K::Disk, i});
    for (size_t i = 0; i < cfg.nets.size(); ++i) add({K::Net, i});
    if (cfg.vsock) add({K::Vsock});
    add({K::Serial});
    add({K::Memory});
    return out;
}

Result<HostMemory> parse_meminfo(std::string_view text) {
    std::optional<uint64_t> ram, swap;
    std::istringstream in{std::string(text)};
    std::string key, unit;
    uint64_t value = 0;
    // "MemTotal:       24683636 kB"
    while (in >> key >> value) {
        std::getline(in, unit);
        if (key == "MemTotal:") ram = value << 10;
        else if (key == "SwapTotal:") swap = value << 10;
    }
    if (!ram || !swap) return fail("/proc/meminfo has no MemTotal or SwapTotal line");
    return HostMemory{*ram, *swap};
}

Result<HostMemory> read_host_memory() {
    std::ifstream f("/proc/meminfo");
    if (!f) return fail_errno("cannot read /proc/meminfo");
    std::stringstream text;
    text << f.rdbuf();
    return parse_meminfo(text.str());
}

Result<void> check_memory_fits(uint64_t guest_bytes, const HostMemory& host) {
    const uint64_t total = host.ram_bytes + host.swap_bytes;
    if (guest_bytes <= total) return {};
    return fail("--memory {} MiB is more than this host's RAM + swap: {} MiB RAM + {} MiB swap = "
                "{} MiB", guest_bytes >> 20, host.ram_bytes >> 20, host.swap_bytes >> 20, total >> 20);
}

}  // namespace kestrel
