#include "boot/acpi/aml.hpp"

#include <limits>

namespace kestrel::acpi::aml {
namespace {

// §20.3 AML Byte Stream Byte Values.
constexpr uint8_t kZeroOp = 0x00;
constexpr uint8_t kOneOp = 0x01;
constexpr uint8_t kNameOp = 0x08;
constexpr uint8_t kBytePrefix = 0x0a;
constexpr uint8_t kWordPrefix = 0x0b;
constexpr uint8_t kDWordPrefix = 0x0c;
constexpr uint8_t kQWordPrefix = 0x0e;
constexpr uint8_t kScopeOp = 0x10;
constexpr uint8_t kBufferOp = 0x11;
constexpr uint8_t kPackageOp = 0x12;
constexpr uint8_t kMethodOp = 0x14;
constexpr uint8_t kDualNamePrefix = 0x2e;
constexpr uint8_t kMultiNamePrefix = 0x2f;
constexpr uint8_t kExtOpPrefix = 0x5b;
constexpr uint8_t kDeviceOp = 0x82;  // after kExtOpPrefix
constexpr uint8_t kRootChar = '\\';
constexpr uint8_t kParentPrefixChar = '^';
constexpr uint8_t kReturnOp = 0xa4;
constexpr uint8_t kOnesOp = 0xff;
constexpr uint8_t kNullName = 0x00;

// §20.2.4: one byte holds 6 bits; with N follow bytes the lead byte holds 4 bits and each
// follow byte 8 more.
constexpr uint32_t kPkgLengthMax = 0x0fff'ffff;

void append_le(Bytes& out, uint64_t v, unsigned bytes) {
    for (unsigned i = 0; i < bytes; ++i) out.push_back(static_cast<uint8_t>(v >> (8 * i)));
}

void append(Bytes& out, std::span<const uint8_t> in) { out.insert(out.end(), in.begin(), in.end()); }

bool is_lead_name_char(char c) { return (c >= 'A' && c <= 'Z') || c == '_'; }
bool is_name_char(char c) { return is_lead_name_char(c) || (c >= '0' && c <= '9'); }

// op(s) PkgLength NameString tail
Result<Bytes> named_object_with_length(std::initializer_list<uint8_t> ops, std::string_view path,
                                       std::span<const uint8_t> between,
                                       std::span<const uint8_t> terms) {
    Bytes body = TRY(name_string(path));
    append(body, between);
    append(body, terms);
    Bytes out(ops);
    append(out, TRY(with_pkg_length(body)));
    return out;
}

}  // namespace

Result<Bytes> encode_pkg_length(uint32_t total) {
    if (total <= 0x3f) return Bytes{static_cast<uint8_t>(total)};
    if (total > kPkgLengthMax) return fail("AML PkgLength {:#x} exceeds {:#x}", total, kPkgLengthMax);
    unsigned follow = total <= 0xfff ? 1 : total <= 0xf'ffff ? 2 : 3;
    Bytes out;
    out.push_back(static_cast<uint8_t>((follow << 6) | (total & 0xf)));
    append_le(out, total >> 4, follow);
    return out;
}

Result<Bytes> with_pkg_length(std::span<const uint8_t> body) {
    if (body.size() > kPkgLengthMax) return fail("AML object of {} bytes is too long", body.size());
    // The encoding's own size counts towards the value it encodes; pick the smallest that fits.
    auto body_len = static_cast<uint32_t>(body.size());
    uint32_t total = body_len + 1;
    if (total > 0x3f) total = body_len + 2;
    if (total > 0xfff) total = body_len + 3;
    if (total > 0xf'ffff) total = body_len + 4;
    Bytes out = TRY(encode_pkg_length(total));
    append(out, body);
    return out;
}

Bytes integer(uint64_t value) {
    if (value == 0) return {kZeroOp};
    if (value == 1) return {kOneOp};
    if (value == std::numeric_limits<uint64_t>::max()) return {kOnesOp};
    Bytes out;
    if (value <= 0xff) {
        out.push_back(kBytePrefix);
        append_le(out, value, 1);
    } else if (value <= 0xffff) {
        out.push_back(kWordPrefix);
        append_le(out, value, 2);
    } else if (value <= 0xffff'ffff) {
        out.push_back(kDWordPrefix);
        append_le(out, value, 4);
    } else {
        out.push_back(kQWordPrefix);
        append_le(out, value, 8);
    }
    return out;
}

Result<Bytes> name_string(std::string_view path) {
    Bytes out;
    std::string_view rest = path;
    if (!rest.empty() && rest.front() == '\\') {
        out.push_back(kRootChar);
        rest.remove_prefix(1);
    } else {
        while (!rest.empty() && rest.front() == '^') {
            out.push_back(kParentPrefixChar);
            rest.remove_prefix(1);
        }
    }
    if (rest.empty()) {
        if (out.empty()) return fail("empty AML name");
        out.push_back(kNullName);
        return out;
    }

    Bytes segs;
    size_t count = 0;
    while (true) {
        size_t dot = rest.find('.');
        std::string_view seg = rest.substr(0, dot);
        if (seg.empty() || seg.size() > 4 || !is_lead_name_char(seg[0]))
            return fail("bad AML name segment '{}' in '{}'", seg, path);
        for (char c : seg)
            if (!is_name_char(c)) return fail("bad AML name character in '{}'", path);
        append(segs, std::span(reinterpret_cast<const uint8_t*>(seg.data()), seg.size()));
        segs.insert(segs.end(), 4 - seg.size(), '_');
        ++count;
        if (dot == std::string_view::npos) break;
        rest.remove_prefix(dot + 1);
    }
    if (count > 255) return fail("AML name '{}' has more than 255 segments", path);

    if (count == 2) {
        out.push_back(kDualNamePrefix);
    } else if (count > 2) {
        out.push_back(kMultiNamePrefix);
        out.push_back(static_cast<uint8_t>(count));
    }
    append(out, segs);
    return out;
}

Result<uint32_t> eisa_id_value(std::string_view id) {
    auto hex = [](char c) -> int {
        if (c >= '0' && c <= '9') return c - '0';
        if (c >= 'A' && c <= 'F') return c - 'A' + 10;
        return -1;
    };
    if (id.size() != 7) return fail("EISA id '{}' is not 7 characters", id);
    uint32_t letters[3];
    for (int i = 0; i < 3; ++i) {
        if (id[i] < 'A' || id[i] > 'Z') return fail("EISA id '{}' must start with 3 letters A-Z", id);
        letters[i] = static_cast<uint32_t>(id[i] - '@');  // 'A' -> 1, 5 bits each
    }
    uint32_t digits[4];
    for (int i = 0; i < 4; ++i) {
        int d = hex(id[3 + i]);
        if (d < 0) return fail("EISA id '{}' must end with 4 hex digits 0-9A-F", id);
        digits[i] = static_cast<uint32_t>(d);
    }
    // Byte 0 holds letters 1 and the top of 2, byte 1 the rest of 2 and letter 3; bytes 2..3
    // hold the digits as written. The integer is these bytes read little-endian.
    uint32_t b0 = (letters[0] << 2) | (letters[1] >> 3);
    uint32_t b1 = ((letters[1] & 0x7) << 5) | letters[2];
    uint32_t b2 = (digits[0] << 4) | digits[1];
    uint32_t b3 = (digits[2] << 4) | digits[3];
    return b0 | (b1 << 8) | (b2 << 16) | (b3 << 24);
}

Result<Bytes> eisa_id(std::string_view id) { return integer(TRY(eisa_id_value(id))); }

Result<Bytes> package(std::span<const Bytes> elements) {
    if (elements.size() > 255)
        return fail("AML Package of {} elements needs VarPackage", elements.size());
    Bytes body{static_cast<uint8_t>(elements.size())};
    for (const Bytes& e : elements) append(body, e);
    Bytes out{kPackageOp};
    append(out, TRY(with_pkg_length(body)));
    return out;
}

Result<Bytes> buffer(std::span<const uint8_t> data) {
    Bytes body = integer(data.size());
    append(body, data);
    Bytes out{kBufferOp};
    append(out, TRY(with_pkg_length(body)));
    return out;
}

Result<Bytes> name(std::string_view path, std::span<const uint8_t> object) {
    Bytes out{kNameOp};
    append(out, TRY(name_string(path)));
    append(out, object);
    return out;
}

Result<Bytes> scope(std::string_view path, std::span<const uint8_t> terms) {
    return named_object_with_length({kScopeOp}, path, {}, terms);
}

Result<Bytes> device(std::string_view path, std::span<const uint8_t> terms) {
    return named_object_with_length({kExtOpPrefix, kDeviceOp}, path, {}, terms);
}

Result<Bytes> method(std::string_view path, uint8_t arg_count, bool serialized,
                     std::span<const uint8_t> terms) {
    if (arg_count > 7) return fail("AML method '{}' with {} arguments (max 7)", path, arg_count);
    const uint8_t flags = static_cast<uint8_t>(arg_count | (serialized ? 0x08 : 0));
    return named_object_with_length({kMethodOp}, path, std::span(&flags, 1), terms);
}

Bytes return_value(std::span<const uint8_t> object) {
    Bytes out{kReturnOp};
    append(out, object);
    return out;
}

Bytes concat(std::initializer_list<std::span<const uint8_t>> parts) {
    Bytes out;
    for (auto p : parts) append(out, p);
    return out;
}

}  // namespace kestrel::acpi::aml
