#include "migration/state_stream.hpp"

#include <cstring>
#include <unordered_map>
#include <utility>

#include "migration/crc64.hpp"

namespace kestrel::migration {

namespace {

constexpr size_t kMagicSize = sizeof kStateMagic;
constexpr size_t kTrailerSize = 8;
// The smallest section: id length, a 1-byte id, version, payload length, no payload. Lets
// parse refuse a section_count the bytes left cannot hold before looping over it.
constexpr size_t kMinSectionSize = 4 + 1 + 4 + 8;

std::string_view plural(uint64_t n) { return n == 1 ? "" : "s"; }

uint64_t load_le(const uint8_t* p, size_t n) {
    uint64_t v = 0;
    for (size_t i = 0; i < n; ++i) v |= uint64_t{p[i]} << (8 * i);
    return v;
}

// Where the first byte outside 0x20..0x7e is, or npos. Ids and header strings end up in
// log lines and error messages: no control characters or escape sequences from a file.
size_t non_printable(std::string_view s) {
    for (size_t i = 0; i < s.size(); ++i)
        if (s[i] < 0x20 || s[i] > 0x7e) return i;
    return std::string_view::npos;
}

Result<void> check_printable(std::string_view where, std::string_view what, std::string_view s) {
    size_t at = non_printable(s);
    if (at == std::string_view::npos) return {};
    return bad_request("state: {}: {} has a non-printable byte 0x{:02x} at offset {}", where, what,
                       static_cast<uint8_t>(s[at]), at);
}

// Length checks of the id, shared by the writer and parse (which checks them before
// reading the id's bytes; `left` is what remains of the file then, unbounded for the writer).
Result<void> check_id_length(std::string_view where, uint64_t len, uint64_t left) {
    if (len == 0 || len > kMaxSectionId)
        return bad_request("state: {}: id length {} is not in 1..{}", where, len, kMaxSectionId);
    if (len > left) return bad_request("state: {}: id length {} exceeds the {} bytes left", where, len, left);
    return {};
}

// Front-to-back reader over the file minus its trailer; each read names where it is.
class Reader {
public:
    explicit Reader(std::span<const uint8_t> d) : d_(d) {}
    size_t left() const { return d_.size() - pos_; }

    Result<uint64_t> le(std::string_view where, std::string_view field, size_t n) {
        if (left() < n)
            return bad_request("state: {}: {} needs {} byte{}, {} left", where, field, n, plural(n), left());
        uint64_t v = load_le(d_.data() + pos_, n);
        pos_ += n;
        return v;
    }
    // Only after the caller checked n <= left().
    std::span<const uint8_t> take(size_t n) {
        auto s = d_.subspan(pos_, n);
        pos_ += n;
        return s;
    }
    std::string take_string(size_t n) {
        auto s = take(n);
        return std::string(reinterpret_cast<const char*>(s.data()), s.size());
    }

    // A u32-length-prefixed header string of at most kMaxHeaderString printable bytes.
    Result<std::string> header_string(std::string_view what) {
        uint64_t len = TRY(le("header", fmt::format("{} length", what), 4));
        if (len > kMaxHeaderString)
            return bad_request("state: header: {} length {} exceeds {}", what, len, kMaxHeaderString);
        if (len > left())
            return bad_request("state: header: {} length {} exceeds the {} bytes left", what, len, left());
        std::string s = take_string(len);
        TRY(check_printable("header", what, s));
        return s;
    }

private:
    std::span<const uint8_t> d_;
    size_t pos_ = 0;
};

Result<Section> parse_section(Reader& r, size_t index,
                              std::unordered_map<std::string, size_t>& seen) {
    std::string where = fmt::format("section {}", index);
    uint64_t id_len = TRY(r.le(where, "id length", 4));
    TRY(check_id_length(where, id_len, r.left()));
    Section s;
    s.id = r.take_string(id_len);
    TRY(check_printable(where, "id", s.id));
    where = fmt::format("section {} ('{}')", index, s.id);
    if (auto [it, inserted] = seen.emplace(s.id, index); !inserted)
        return bad_request("state: {}: duplicate id (also section {})", where, it->second);
    s.version = static_cast<uint32_t>(TRY(r.le(where, "section_version", 4)));
    uint64_t len = TRY(r.le(where, "payload_length", 8));
    if (len > kMaxStateSize)
        return bad_request("state: {}: payload_length {} exceeds {}", where, len, kMaxStateSize);
    if (len > r.left())
        return bad_request("state: {}: payload_length {} exceeds the {} bytes left", where, len, r.left());
    auto p = r.take(len);
    s.payload.assign(p.begin(), p.end());
    return s;
}

}  // namespace

// ---- writing -----------------------------------------------------------------------------

void Encoder::put_string(std::string_view s) {
    put_u32(static_cast<uint32_t>(s.size()));
    put_bytes(std::span(reinterpret_cast<const uint8_t*>(s.data()), s.size()));
}

StateWriter::StateWriter(std::string kestrel_version, std::string cpu_summary)
    : kestrel_version_(std::move(kestrel_version)), cpu_summary_(std::move(cpu_summary)) {}

Encoder& StateWriter::section(std::string id, uint32_t version) {
    sections_.push_back(Pending{std::move(id), version, Encoder{}});
    return sections_.back().enc;
}

Result<std::vector<uint8_t>> StateWriter::finish() && {
    for (auto [what, s] : {std::pair<std::string_view, std::string_view>{"kestrel version", kestrel_version_},
                           {"cpu summary", cpu_summary_}}) {
        if (s.size() > kMaxHeaderString)
            return bad_request("state: writer: {} length {} exceeds {}", what, s.size(), kMaxHeaderString);
        TRY(check_printable("writer", what, s));
    }
    if (sections_.size() > kMaxSections)
        return bad_request("state: writer: {} sections exceed {}", sections_.size(), kMaxSections);
    std::unordered_map<std::string_view, size_t> seen;
    size_t index = 0;
    for (const auto& s : sections_) {
        std::string where = fmt::format("writer: section {}", index);
        TRY(check_id_length(where, s.id.size(), UINT64_MAX));
        TRY(check_printable(where, "id", s.id));
        if (auto [it, inserted] = seen.emplace(s.id, index); !inserted)
            return bad_request("state: writer: section {} ('{}'): duplicate id (also section {})", index, s.id,
                               it->second);
        ++index;
    }

    Encoder out;
    out.put_bytes(std::span(reinterpret_cast<const uint8_t*>(kStateMagic), kMagicSize));
    out.put_u32(kStateFormatVersion);
    out.put_string(kestrel_version_);
    out.put_string(cpu_summary_);
    out.put_u32(static_cast<uint32_t>(sections_.size()));
    for (const auto& s : sections_) {
        out.put_string(s.id);
        out.put_u32(s.version);
        out.put_u64(s.enc.bytes().size());
        out.put_bytes(s.enc.bytes());
        // Checked as it grows so a runaway section stops here, not after more copying.
        if (out.bytes().size() + kTrailerSize > kMaxStateSize)
            return bad_request("state: writer: section '{}' takes the file past {} bytes", s.id, kMaxStateSize);
    }
    std::vector<uint8_t> bytes = out.bytes();
    uint64_t crc = crc64_xz(bytes);
    for (size_t i = 0; i < kTrailerSize; ++i) bytes.push_back(static_cast<uint8_t>(crc >> (8 * i)));
    return bytes;
}

// ---- reading -----------------------------------------------------------------------------

const Section* StateFile::find(std::string_view id) const {
    for (const auto& s : sections)
        if (s.id == id) return &s;
    return nullptr;
}

Result<StateFile> StateFile::parse(std::span<const uint8_t> data) {
    if (data.size() > kMaxStateSize)
        return bad_request("state: {} bytes exceed the largest state file ({} bytes)", data.size(), kMaxStateSize);
    // The magic before the checksum, only to tell "not a state file at all" (a wrong path)
    // from "a damaged one"; nothing else is read before the checksum holds.
    if (data.size() < kMagicSize || std::memcmp(data.data(), kStateMagic, kMagicSize) != 0)
        return bad_request("state: not a kestrel state file (it does not start with 'KESTRLST')");
    if (data.size() < kMagicSize + kTrailerSize)
        return bad_request("state: {} bytes is too short for a state file", data.size());
    auto body = data.first(data.size() - kTrailerSize);
    uint64_t stored = load_le(data.data() + body.size(), kTrailerSize);
    uint64_t computed = crc64_xz(body);
    if (stored != computed)
        return bad_request("state: checksum mismatch (stored {:#018x}, computed {:#018x}): the file is corrupt or "
                           "truncated", stored, computed);

    Reader r(body.subspan(kMagicSize));
    StateFile f;
    f.format_version = static_cast<uint32_t>(TRY(r.le("header", "format_version", 4)));
    if (f.format_version > kStateFormatVersion)
        return bad_request("state: header: format_version {} is newer than this kestrel reads ({}): restore with "
                           "the kestrel that wrote it (or a newer one)", f.format_version, kStateFormatVersion);
    if (f.format_version == 0)
        return bad_request("state: header: format_version 0 is not a version (the first is 1)");
    f.kestrel_version = TRY(r.header_string("kestrel version"));
    f.cpu_summary = TRY(r.header_string("cpu summary"));
    uint64_t count = TRY(r.le("header", "section_count", 4));
    if (count > kMaxSections)
        return bad_request("state: header: section_count {} exceeds {}", count, kMaxSections);
    if (count * kMinSectionSize > r.left())
        return bad_request("state: header: section_count {} needs at least {} bytes, {} left", count,
                           count * kMinSectionSize, r.left());
    f.sections.reserve(count);
    std::unordered_map<std::string, size_t> seen;
    for (size_t i = 0; i < count; ++i) f.sections.push_back(TRY(parse_section(r, i, seen)));
    if (r.left() != 0)
        return bad_request("state: {} byte{} after the last of {} sections, before the checksum", r.left(),
                           plural(r.left()), count);
    return f;
}

// ---- Decoder -----------------------------------------------------------------------------

Decoder::Decoder(const Section& s) : id_(s.id), version_(s.version), payload_(s.payload) {}

Result<Decoder> Decoder::of(const Section& s, uint32_t version) {
    if (s.version != version)
        return bad_request("state: section '{}': version {} is not one this kestrel reads ({})", s.id, s.version,
                           version);
    return Decoder(s);
}

std::unexpected<Error> Decoder::error(std::string_view field, std::string_view what) const {
    return bad_request("state: section '{}' v{}: field '{}': {}", id_, version_, field, what);
}

Result<uint64_t> Decoder::le(std::string_view field, size_t n) {
    if (remaining() < n)
        return error(field, fmt::format("needs {} byte{}, {} left", n, plural(n), remaining()));
    uint64_t v = load_le(payload_.data() + pos_, n);
    pos_ += n;
    return v;
}

Result<uint8_t> Decoder::u8(std::string_view field) { return static_cast<uint8_t>(TRY(le(field, 1))); }
Result<uint16_t> Decoder::u16(std::string_view field) { return static_cast<uint16_t>(TRY(le(field, 2))); }
Result<uint32_t> Decoder::u32(std::string_view field) { return static_cast<uint32_t>(TRY(le(field, 4))); }
Result<uint64_t> Decoder::u64(std::string_view field) { return le(field, 8); }
Result<int64_t> Decoder::i64(std::string_view field) { return static_cast<int64_t>(TRY(le(field, 8))); }

Result<bool> Decoder::boolean(std::string_view field) {
    if (remaining() >= 1 && payload_[pos_] > 1)
        return error(field, fmt::format("{} is not a bool (0 or 1)", payload_[pos_]));
    return TRY(le(field, 1)) != 0;
}

Result<uint32_t> Decoder::u32_max(std::string_view field, uint32_t max) {
    if (remaining() >= 4) {
        auto v = static_cast<uint32_t>(load_le(payload_.data() + pos_, 4));
        if (v > max) return error(field, fmt::format("{} exceeds the maximum {}", v, max));
    }
    return u32(field);
}

Result<std::span<const uint8_t>> Decoder::bytes(std::string_view field, size_t n) {
    if (remaining() < n) return error(field, fmt::format("needs {} byte{}, {} left", n, plural(n), remaining()));
    auto s = payload_.subspan(pos_, n);
    pos_ += n;
    return s;
}

Result<std::string> Decoder::string(std::string_view field, size_t max) {
    if (remaining() < 4) return error(field, fmt::format("needs 4 bytes (length), {} left", remaining()));
    uint64_t len = load_le(payload_.data() + pos_, 4);
    if (len > max) return error(field, fmt::format("length {} exceeds the maximum {}", len, max));
    if (len > remaining() - 4)
        return error(field, fmt::format("length {} exceeds the {} bytes left", len, remaining() - 4));
    pos_ += 4;
    auto s = payload_.subspan(pos_, len);
    pos_ += len;
    return std::string(reinterpret_cast<const char*>(s.data()), s.size());
}

Result<void> Decoder::finish() const {
    if (remaining() == 0) return {};
    return bad_request("state: section '{}' v{}: {} byte{} left over after the last field", id_, version_,
                       remaining(), plural(remaining()));
}

}  // namespace kestrel::migration
