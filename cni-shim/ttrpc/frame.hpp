// ttrpc framing: the 10-byte message header and an incremental decoder that turns a byte
// stream into frames. Pure functions over bytes (no sockets), so the fuzzer can drive it.
//
// Wire format (github.com/containerd/ttrpc channel.go): every message is a header
//   offset 0  u32 big-endian  data length (at most 4 MiB)
//   offset 4  u32 big-endian  stream id (odd: opened by the client)
//   offset 8  u8              message type (1 request, 2 response)
//   offset 9  u8              flags (stream flags of newer ttrpc; unary calls send 0)
// followed by `length` bytes of data: a protobuf ttrpc.Request or ttrpc.Response.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <expected>
#include <optional>
#include <string>
#include <string_view>

namespace kestrel::ttrpc {

inline constexpr std::size_t kHeaderSize = 10;
// ttrpc's messageLengthMax; a peer announcing more is refused (and its data skipped).
inline constexpr std::uint32_t kMaxDataLength = 4u << 20;

// Type 3 (data, for streaming calls of ttrpc >= 1.2) is not spoken here: the shim API is
// unary. The decoder reports such frames as FrameError::UnknownType and skips them.
enum class MessageType : std::uint8_t { Request = 1, Response = 2 };

struct FrameHeader {
    std::uint32_t length = 0;
    std::uint32_t stream_id = 0;
    std::uint8_t type = 0;  // raw: may be a type this side does not know
    std::uint8_t flags = 0;
};

struct Frame {
    std::uint32_t stream_id = 0;
    MessageType type = MessageType::Request;
    std::uint8_t flags = 0;
    std::string data;
};

enum class FrameError {
    TooLong,      // header announced more than kMaxDataLength
    UnknownType,  // message type other than request/response
};

// A refused frame. The header was complete and its length known, so the decoder stays in
// step with the stream: it skips the refused frame's data and goes on with the next one.
struct DecodeError {
    FrameError kind;
    FrameHeader header;
    std::string what() const;
};

std::array<std::uint8_t, kHeaderSize> encode_header(const FrameHeader& h);
FrameHeader decode_header(const std::array<std::uint8_t, kHeaderSize>& bytes);

// Header + data, ready to write. data.size() must be <= kMaxDataLength (callers check:
// a larger message cannot be sent at all).
std::string encode_frame(std::uint32_t stream_id, MessageType type, std::string_view data,
                         std::uint8_t flags = 0);

// Fed arbitrary chunks of the stream in order. Memory use is bounded by the frame being
// assembled: its data buffer is sized to the announced length only once the header has been
// validated, so at most kMaxDataLength.
class FrameDecoder {
public:
    // Consumes bytes from the front of `input` (advancing it) until one frame is complete, a
    // frame is refused, or input runs out. Returns the frame, the refusal, or nullopt when
    // more input is needed. Call again while input is not empty.
    std::expected<std::optional<Frame>, DecodeError> feed(std::string_view& input);

    // No partial frame buffered: the stream may end here without truncating a message.
    bool at_boundary() const;

private:
    enum class State { Header, Data, Skip };
    State state_ = State::Header;
    std::array<std::uint8_t, kHeaderSize> header_bytes_{};
    std::size_t header_have_ = 0;
    FrameHeader header_;
    std::string data_;
    std::uint32_t skip_left_ = 0;
};

}  // namespace kestrel::ttrpc
