// The versioned state stream: the byte format of a snapshot's state file and of the device
// state a live migration sends, with StateWriter/Encoder to produce it and StateFile::parse/
// Decoder to read it back. It owns the container only (header, sections, checksum); what a
// component puts in its section's payload is that component's business, versioned by it.
//
// Format (format_version 1), every integer little-endian, no padding anywhere:
//
//   magic           8 bytes  "KESTRLST"
//   format_version  u32      1; a reader refuses a newer one (it cannot know what changed)
//   kestrel_version u32 length (<= 256) + that many bytes, printable ASCII
//   cpu_summary     u32 length (<= 256) + bytes, printable ASCII, e.g.
//                   "AuthenticAMD family 25 model 1": what the state was taken on, so a
//                   restore on a different CPU can say why it refuses (or warn)
//   section_count   u32      <= 4096
//   section_count times:
//     id_length       u32    1..128
//     id              bytes  printable ASCII (0x20..0x7e), unique in the file: the stable
//                            name of the component, "vcpu/0", "uart/com1", "virtio-pci/00:03.0"
//     section_version u32    the component's own payload version
//     payload_length  u64    <= kMaxStateSize and within the bytes left before the trailer
//     payload         bytes  the component's fields, written with Encoder
//   crc64           u64      CRC-64/XZ (migration/crc64.hpp) of every byte before it;
//                            nothing follows it
//
// The input of StateFile::parse is hostile (a file anyone could have written, a socket):
// every length and count is checked against the bytes left and its bound before use, and
// every error names where it is ("state: header: ...", "state: section 3 ('uart/com1'): ...";
// sections are numbered from 0 in the order they appear). Errors are ErrorKind::BadRequest.
// The encoding is canonical: a file parse accepts is exactly what StateWriter writes for
// the same header and sections (the fuzz target checks this).
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "vmm/base/error.hpp"

namespace kestrel::migration {

inline constexpr char kStateMagic[8] = {'K', 'E', 'S', 'T', 'R', 'L', 'S', 'T'};
inline constexpr uint32_t kStateFormatVersion = 1;
inline constexpr size_t kMaxHeaderString = 256;
inline constexpr size_t kMaxSections = 4096;
inline constexpr size_t kMaxSectionId = 128;
// The whole file. Device and vCPU state, not guest RAM (which travels beside it): a
// bound well above any real state that still keeps a hostile length from meaning gigabytes.
inline constexpr uint64_t kMaxStateSize = 256ull << 20;

// Appends one section's fields, little-endian. Variable-length data is either raw
// (put_bytes: the reader must know the length, e.g. a fixed-size register block) or
// length-prefixed (put_string, and put_u32(n) before n items of anything).
class Encoder {
public:
    void put_u8(uint8_t v) { buf_.push_back(v); }
    void put_u16(uint16_t v) { put_le(v, 2); }
    void put_u32(uint32_t v) { put_le(v, 4); }
    void put_u64(uint64_t v) { put_le(v, 8); }
    void put_i64(int64_t v) { put_le(static_cast<uint64_t>(v), 8); }  // two's complement
    void put_bool(bool v) { put_u8(v ? 1 : 0); }
    void put_bytes(std::span<const uint8_t> b) { buf_.insert(buf_.end(), b.begin(), b.end()); }
    // u32 length, then the bytes (Decoder::string reads it with its own maximum).
    void put_string(std::string_view s);

    const std::vector<uint8_t>& bytes() const { return buf_; }

private:
    void put_le(uint64_t v, int n) {
        for (int i = 0; i < n; ++i) buf_.push_back(static_cast<uint8_t>(v >> (8 * i)));
    }
    std::vector<uint8_t> buf_;
};

// Builds one state file: section() per component, then finish().
class StateWriter {
public:
    StateWriter(std::string kestrel_version, std::string cpu_summary);

    // The encoder for a new section; the reference stays valid until finish(). A
    // duplicate, empty, over-long or non-printable id is a programming error (ids are fixed
    // component names), but a Result rather than an assert: finish() refuses with a
    // message naming the id, so a release build cannot write a file parse would refuse.
    Encoder& section(std::string id, uint32_t version);

    // The file: header, sections in the order they were added, checksum. Refuses what parse
    // would refuse (the bounds above, header strings too long or not printable).
    Result<std::vector<uint8_t>> finish() &&;

private:
    struct Pending {
        std::string id;
        uint32_t version;
        Encoder enc;
    };
    std::string kestrel_version_, cpu_summary_;
    std::deque<Pending> sections_;  // a deque: push_back keeps earlier Encoder& valid
};

struct Section {
    std::string id;
    uint32_t version = 0;
    std::vector<uint8_t> payload;
};

struct StateFile {
    uint32_t format_version = 0;
    std::string kestrel_version, cpu_summary;
    std::vector<Section> sections;

    // nullptr when no section has this id (a component absent from the file).
    const Section* find(std::string_view id) const;

    // Checks the magic, the checksum, then the structure (see the top of this file).
    static Result<StateFile> parse(std::span<const uint8_t> data);
};

// Reads one section's payload front to back. Every read names its field, so a short or
// out-of-range payload says e.g. "state: section 'uart/com1' v1: field 'lcr': needs 1 byte,
// 0 left". After an error the position is unchanged. The section must outlive the Decoder.
class Decoder {
public:
    explicit Decoder(const Section& s);
    // A Decoder for `s` if it has the payload version this kestrel reads, else the refusal
    // "state: section 'ID': version N is not one this kestrel reads (M)".
    static Result<Decoder> of(const Section& s, uint32_t version);

    Result<uint8_t> u8(std::string_view field);
    Result<uint16_t> u16(std::string_view field);
    Result<uint32_t> u32(std::string_view field);
    Result<uint64_t> u64(std::string_view field);
    Result<int64_t> i64(std::string_view field);
    // 0 or 1; anything else is refused (not read as true), naming the value.
    Result<bool> boolean(std::string_view field);
    // A u32 that must be <= max: counts and indices, checked before anything is sized by them.
    Result<uint32_t> u32_max(std::string_view field, uint32_t max);
    // n raw bytes, a view into the section's payload.
    Result<std::span<const uint8_t>> bytes(std::string_view field, size_t n);
    // A put_string string whose length must be <= max.
    Result<std::string> string(std::string_view field, size_t max);
    // Refuses bytes left over: a payload longer than its version says is corrupt or of
    // another version, and silently ignoring the rest would restore half of it.
    Result<void> finish() const;

    size_t remaining() const { return payload_.size() - pos_; }

private:
    Result<uint64_t> le(std::string_view field, size_t n);
    std::unexpected<Error> error(std::string_view field, std::string_view what) const;

    std::string_view id_;
    uint32_t version_;
    std::span<const uint8_t> payload_;
    size_t pos_ = 0;
};

}  // namespace kestrel::migration
