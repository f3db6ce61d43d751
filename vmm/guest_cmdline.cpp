#include "vmm/guest_cmdline.hpp"

#include <vector>

namespace kestrel {

namespace {

// Splits on spaces outside double quotes (the quotes stay in the words).
std::vector<std::string_view> words(std::string_view s) {
    std::vector<std::string_view> out;
    size_t i = 0;
    while (i < s.size()) {
        while (i < s.size() && s[i] == ' ') ++i;
        if (i == s.size()) break;
        size_t start = i;
        bool quoted = false;
        while (i < s.size() && (quoted || s[i] != ' ')) {
            if (s[i] == '"') quoted = !quoted;
            ++i;
        }
        out.push_back(s.substr(start, i - start));
    }
    return out;
}

bool is_nopnp_on(std::string_view w) {
    constexpr std::string_view kName = "i8042.nopnp";
    if (w == kName) return true;
    if (!w.starts_with(kName) || w.size() <= kName.size() || w[kName.size()] != '=') return false;
    const std::string_view v = w.substr(kName.size() + 1);
    return v == "1" || v == "y" || v == "Y" || v == "on";  // kstrtobool's true spellings
}

}  // namespace

GuestCmdline guest_cmdline(std::string_view configured) {
    GuestCmdline g;
    bool kernel_params = true;
    std::string kept;
    for (std::string_view w : words(configured)) {
        if (w == "--") kernel_params = false;
        if (kernel_params && is_nopnp_on(w)) {
            g.dropped_nopnp = true;
            continue;
        }
        if (!kept.empty()) kept += ' ';
        kept += w;
    }
    // Untouched means byte for byte, spacing included.
    g.text = g.dropped_nopnp ? kept : std::string(configured);
    return g;
}

}  // namespace kestrel
