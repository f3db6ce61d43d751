// The live-migration stream between two kestrel processes: where it goes (unix:PATH or
// tcp:HOST:PORT), and its framing. The destination treats every byte as hostile: every
// length and page address is checked before anything is sized or written by it, and every
// message carries a CRC-32C (migration/crc32c.hpp) that is checked before it is acted on.
//
// Stream (integers little-endian):
//   source -> destination: "KESTRLMG" u32 version (1), then messages: u8 type, its body, and
//   u32 CRC-32C over the type byte and the body:
//     1 CONFIG  u32 length (<= 1 MiB), the VM configuration as GET /vm/config's JSON
//     2 PAGES   u64 guest-physical address (4 KiB aligned), u32 count (1..kMaxRunPages),
//               count x 4096 bytes: a run of guest pages (pre-copy rounds; re-sent when dirtied)
//     5 ZERO    u64 address, u32 count: a run of pages that read as zero (no data)
//     3 STATE   u64 length (<= kMaxStateBytes), a state file (migration/state_stream.hpp,
//               with its own CRC-64) with every vCPU and device of the paused source
//     4 DONE    nothing
//   destination -> source, an answer after CONFIG (the VM is built here: its memory, devices
//   and their backing exist; else nothing more is sent) and after DONE (the VM runs here):
//     u8 0, or u8 1, u32 length (<= 4096), the reason it refused (the source then resumes).
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "vmm/base/error.hpp"
#include "vmm/base/fd.hpp"

namespace kestrel::migration {

inline constexpr uint32_t kStreamVersion = 1;
inline constexpr uint64_t kPageSize = 4096;
inline constexpr uint32_t kMaxRunPages = 256;  // 1 MiB per PAGES message
inline constexpr uint32_t kMaxConfigBytes = 1 << 20;
inline constexpr uint64_t kMaxStateBytes = 64ull << 20;
inline constexpr uint32_t kMaxReasonBytes = 4096;
inline constexpr size_t kBufferBytes = 1 << 20;  // what goes out (and is read) at a time

enum class MessageType : uint8_t { Config = 1, Pages = 2, State = 3, Done = 4, Zero = 5 };

struct Endpoint {
    enum class Kind { Unix, Tcp } kind = Kind::Unix;
    std::string path;  // unix
    std::string host;  // tcp
    uint16_t port = 0;
    std::string text;  // as given
};
// "unix:PATH" or "tcp:HOST:PORT" (HOST a name or address; [v6] in brackets).
Result<Endpoint> parse_endpoint(std::string_view s);
Result<UniqueFd> connect_to(const Endpoint& e);
// Listens and returns the one connection accepted (a unix socket's file is removed after).
Result<UniqueFd> accept_one(const Endpoint& e);

// Whole writes and reads on a blocking stream socket; a short read is "the stream ended".
Result<void> write_all(int fd, std::span<const uint8_t> data);
Result<void> read_exact(int fd, std::span<uint8_t> data, std::string_view what);
// The destination's answer: OK, or a refusal with its reason.
Result<void> send_answer(int fd, const Result<void>& outcome);
// Reads one; a refusal comes back as an error carrying the destination's reason.
Result<void> read_answer(int fd, std::string_view when);

class StreamWriter {
public:
    explicit StreamWriter(int fd) : fd_(fd) {}
    Result<void> header();
    Result<void> config(std::string_view json);
    Result<void> pages(uint64_t gpa, std::span<const uint8_t> data);  // whole pages
    Result<void> zero(uint64_t gpa, uint32_t count);
    Result<void> state(std::span<const uint8_t> file);
    Result<void> done();   // and flushes
    // Sends what is gathered (config() and done() do it themselves: an answer follows them).
    Result<void> flush();
    uint64_t bytes_sent() const { return sent_; }

private:
    Result<void> put(std::span<const uint8_t> b);  // gathered, counted into the message's CRC
    Result<void> end();                            // the CRC, then a new message
    int fd_;
    uint64_t sent_ = 0;
    uint32_t crc_ = 0;
    std::vector<uint8_t> out_;  // messages not sent yet
};

class StreamReader {
public:
    explicit StreamReader(int fd) : fd_(fd) {}
    Result<void> header();
    Result<MessageType> next();  // the type of the next message
    Result<std::string> config();
    // A PAGES or ZERO message's header; the caller checks the range, then (PAGES) reads
    // count pages with page_data, and calls end() either way.
    struct Run {
        uint64_t gpa;
        uint32_t count;
    };
    Result<Run> run();
    Result<void> page_data(std::span<uint8_t> into);
    Result<std::vector<uint8_t>> state();
    // Every message ends here: its CRC, refused (naming the message) when it does not match
    // what was read. config() and state() call it themselves; PAGES, ZERO and DONE need it.
    Result<void> end();
    uint64_t bytes_read() const { return read_; }

private:
    Result<void> get(std::span<uint8_t> b, std::string_view what);
    int fd_;
    uint64_t read_ = 0;
    uint32_t crc_ = 0;
    MessageType type_ = MessageType::Done;
    std::vector<uint8_t> in_;  // read from fd_, not yet handed out from pos_ on
    size_t pos_ = 0;
};

}  // namespace kestrel::migration
