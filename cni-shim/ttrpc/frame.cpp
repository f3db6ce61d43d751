#include "cni-shim/ttrpc/frame.hpp"

#include <algorithm>
#include <utility>

#include <fmt/format.h>

namespace kestrel::ttrpc {

namespace {

void put_be32(std::uint8_t* p, std::uint32_t v) {
    p[0] = static_cast<std::uint8_t>(v >> 24);
    p[1] = static_cast<std::uint8_t>(v >> 16);
    p[2] = static_cast<std::uint8_t>(v >> 8);
    p[3] = static_cast<std::uint8_t>(v);
}

std::uint32_t get_be32(const std::uint8_t* p) {
    return (std::uint32_t{p[0]} << 24) | (std::uint32_t{p[1]} << 16) | (std::uint32_t{p[2]} << 8) |
           std::uint32_t{p[3]};
}

bool known_type(std::uint8_t t) {
    return t == static_cast<std::uint8_t>(MessageType::Request) ||
           t == static_cast<std::uint8_t>(MessageType::Response);
}

}  // namespace

std::string DecodeError::what() const {
    switch (kind) {
    case FrameError::TooLong:
        return fmt::format("ttrpc frame on stream {} announces {} bytes, more than the {} allowed",
                           header.stream_id, header.length, kMaxDataLength);
    case FrameError::UnknownType:
        return fmt::format("ttrpc frame on stream {} has unknown message type {}", header.stream_id,
                           header.type);
    }
    return "ttrpc frame error";
}

std::array<std::uint8_t, kHeaderSize> encode_header(const FrameHeader& h) {
    std::array<std::uint8_t, kHeaderSize> b{};
    put_be32(&b[0], h.length);
    put_be32(&b[4], h.stream_id);
    b[8] = h.type;
    b[9] = h.flags;
    return b;
}

FrameHeader decode_header(const std::array<std::uint8_t, kHeaderSize>& b) {
    return FrameHeader{get_be32(&b[0]), get_be32(&b[4]), b[8], b[9]};
}

std::string encode_frame(std::uint32_t stream_id, MessageType type, std::string_view data,
                         std::uint8_t flags) {
    auto h = encode_header(FrameHeader{static_cast<std::uint32_t>(data.size()), stream_id,
                                       static_cast<std::uint8_t>(type), flags});
    std::string out;
    out.reserve(kHeaderSize + data.size());
    out.append(reinterpret_cast<const char*>(h.data()), h.size());
    out.append(data);
    return out;
}

std::expected<std::optional<Frame>, DecodeError> FrameDecoder::feed(std::string_view& input) {
    while (!input.empty()) {
        switch (state_) {
        case State::Header: {
            std::size_t n = std::min(kHeaderSize - header_have_, input.size());
            std::copy_n(input.data(), n, header_bytes_.begin() + static_cast<std::ptrdiff_t>(header_have_));
            header_have_ += n;
            input.remove_prefix(n);
            if (header_have_ < kHeaderSize) return std::nullopt;
            header_have_ = 0;
            header_ = decode_header(header_bytes_);
            std::optional<FrameError> refused;
            if (header_.length > kMaxDataLength) {
                refused = FrameError::TooLong;
            } else if (!known_type(header_.type)) {
                refused = FrameError::UnknownType;
            }
            if (refused) {
                skip_left_ = header_.length;
                state_ = skip_left_ > 0 ? State::Skip : State::Header;
                return std::unexpected(DecodeError{*refused, header_});
            }
            data_.clear();
            data_.reserve(header_.length);
            state_ = State::Data;
            break;  // a zero-length frame completes below, even with no input left
        }
        case State::Data: {
            std::size_t n = std::min<std::size_t>(header_.length - data_.size(), input.size());
            data_.append(input.data(), n);
            input.remove_prefix(n);
            break;
        }
        case State::Skip: {
            std::size_t n = std::min<std::size_t>(skip_left_, input.size());
            skip_left_ -= static_cast<std::uint32_t>(n);
            input.remove_prefix(n);
            if (skip_left_ == 0) state_ = State::Header;
            continue;
        }
        }
        if (state_ == State::Data && data_.size() == header_.length) {
            state_ = State::Header;
            return Frame{header_.stream_id, static_cast<MessageType>(header_.type), header_.flags,
                         std::exchange(data_, {})};
        }
    }
    return std::nullopt;
}

bool FrameDecoder::at_boundary() const {
    return state_ == State::Header && header_have_ == 0;
}

}  // namespace kestrel::ttrpc
