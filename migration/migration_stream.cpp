#include "migration/migration_stream.hpp"

#include <netdb.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <cerrno>
#include <charconv>
#include <cstring>

#include "migration/crc32c.hpp"

namespace kestrel::migration {

namespace {

constexpr uint8_t kMagic[8] = {'K', 'E', 'S', 'T', 'R', 'L', 'M', 'G'};

template <typename T>
std::span<const uint8_t> le(const T& v) {  // x86-64 is little-endian, as the stream
    return std::span(reinterpret_cast<const uint8_t*>(&v), sizeof v);
}

template <typename T>
std::span<uint8_t> le_out(T& v) {
    return std::span(reinterpret_cast<uint8_t*>(&v), sizeof v);
}

Result<sockaddr_un> unix_address(const std::string& path) {
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    if (path.empty() || path.size() >= sizeof a.sun_path)
        return bad_request("migration: unix socket path '{}' is empty or longer than {} bytes", path, sizeof a.sun_path - 1);
    std::memcpy(a.sun_path, path.c_str(), path.size() + 1);
    return a;
}

}  // namespace

Result<Endpoint> parse_endpoint(std::string_view s) {
    Endpoint e;
    e.text = std::string(s);
    if (s.starts_with("unix:")) {
        e.kind = Endpoint::Kind::Unix;
        e.path = std::string(s.substr(5));
        TRY(unix_address(e.path));
        return e;
    }
    if (s.starts_with("tcp:")) {
        std::string_view rest = s.substr(4);
        auto colon = rest.rfind(':');
        if (colon == std::string_view::npos || colon == 0)
            return bad_request("migration: '{}' is not tcp:HOST:PORT", s);
        std::string_view host = rest.substr(0, colon), port = rest.substr(colon + 1);
        if (host.size() > 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
        unsigned p = 0;
        auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), p);
        if (ec != std::errc() || end != port.data() + port.size() || p == 0 || p > 65535)
            return bad_request("migration: '{}': port '{}' is not 1..65535", s, port);
        e.kind = Endpoint::Kind::Tcp;
        e.host = std::string(host);
        e.port = static_cast<uint16_t>(p);
        return e;
    }
    return bad_request("migration: '{}' is not unix:PATH or tcp:HOST:PORT", s);
}

namespace {

Result<UniqueFd> tcp_socket(const Endpoint& e, bool listen_side) {
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = listen_side ? AI_PASSIVE : 0;
    addrinfo* res = nullptr;
    const std::string port = std::to_string(e.port);
    if (int rc = ::getaddrinfo(e.host.c_str(), port.c_str(), &hints, &res); rc != 0)
        return bad_request("migration: {}: {}", e.text, ::gai_strerror(rc));
    std::string last = "no address";
    for (addrinfo* ai = res; ai; ai = ai->ai_next) {
        UniqueFd fd(::socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol));
        if (!fd) continue;
        int one = 1;
        if (listen_side) {
            ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
            if (::bind(fd.get(), ai->ai_addr, ai->ai_addrlen) == 0 && ::listen(fd.get(), 1) == 0) {
                ::freeaddrinfo(res);
                return fd;
            }
        } else if (::connect(fd.get(), ai->ai_addr, ai->ai_addrlen) == 0) {
            ::freeaddrinfo(res);
            return fd;
        }
        last = std::strerror(errno);
    }
    ::freeaddrinfo(res);
    return fail("migration: {} {}: {}", listen_side ? "listening on" : "connecting to", e.text, last);
}

}  // namespace

Result<UniqueFd> connect_to(const Endpoint& e) {
    if (e.kind == Endpoint::Kind::Tcp) return tcp_socket(e, false);
    auto a = TRY(unix_address(e.path));
    UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!fd) return fail_errno("migration: socket");
    if (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&a), sizeof a) != 0)
        return fail_errno("migration: connecting to {}", e.text);
    return fd;
}

Result<UniqueFd> accept_one(const Endpoint& e) {
    UniqueFd lfd;
    if (e.kind == Endpoint::Kind::Tcp) {
        lfd = TRY(tcp_socket(e, true));
    } else {
        auto a = TRY(unix_address(e.path));
        lfd = UniqueFd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
        if (!lfd) return fail_errno("migration: socket");
        if (::bind(lfd.get(), reinterpret_cast<const sockaddr*>(&a), sizeof a) != 0 || ::listen(lfd.get(), 1) != 0)
            return fail_errno("migration: listening on {}", e.text);
    }
    int fd;
    do fd = ::accept4(lfd.get(), nullptr, nullptr, SOCK_CLOEXEC);
    while (fd < 0 && errno == EINTR);
    if (e.kind == Endpoint::Kind::Unix) ::unlink(e.path.c_str());
    if (fd < 0) return fail_errno("migration: accepting on {}", e.text);
    return UniqueFd(fd);
}

Result<void> write_all(int fd, std::span<const uint8_t> data) {
    while (!data.empty()) {
        ssize_t n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return fail_errno("migration: sending");
        data = data.subspan(static_cast<size_t>(n));
    }
    return {};
}

Result<void> read_exact(int fd, std::span<uint8_t> data, std::string_view what) {
    while (!data.empty()) {
        ssize_t n = ::read(fd, data.data(), data.size());
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return fail_errno("migration stream: reading {}", what);
        if (n == 0) return bad_request("migration stream: it ended in {} (the other side closed the connection)", what);
        data = data.subspan(static_cast<size_t>(n));
    }
    return {};
}

Result<void> send_answer(int fd, const Result<void>& outcome) {
    if (outcome) {
        const uint8_t ok = 0;
        return write_all(fd, std::span(&ok, 1));
    }
    std::string why = outcome.error().what();
    if (why.size() > kMaxReasonBytes) why.resize(kMaxReasonBytes);
    const uint8_t no = 1;
    const uint32_t n = static_cast<uint32_t>(why.size());
    TRY(write_all(fd, std::span(&no, 1)));
    TRY(write_all(fd, le(n)));
    return write_all(fd, std::span(reinterpret_cast<const uint8_t*>(why.data()), why.size()));
}

Result<void> read_answer(int fd, std::string_view when) {
    uint8_t answer = 1;
    TRY(read_exact(fd, std::span(&answer, 1), fmt::format("the destination's answer for {}", when)));
    if (answer == 0) return {};
    uint32_t n = 0;
    std::string reason = "(no reason given)";
    if (answer == 1 && read_exact(fd, le_out(n), "the refusal") && n <= kMaxReasonBytes) {
        std::string s(n, '\0');
        if (read_exact(fd, std::span(reinterpret_cast<uint8_t*>(s.data()), n), "the refusal")) reason = s;
    }
    return fail("the destination refused {}: {}", when, reason);
}

// Messages are gathered in `out_` and go out kBufferBytes at a time (and at flush()): one send
// for many small PAGES runs instead of five each. The CRC is over the copy in `out_`, the bytes
// that go out, which guest RAM under a running guest is not.
Result<void> StreamWriter::put(std::span<const uint8_t> b) {
    const size_t at = out_.size();
    out_.insert(out_.end(), b.begin(), b.end());
    crc_ = crc32c(std::span(out_).subspan(at), crc_);
    sent_ += b.size();
    return {};
}

Result<void> StreamWriter::end() {
    const uint32_t c = crc_;
    out_.insert(out_.end(), le(c).begin(), le(c).end());
    sent_ += sizeof c;
    crc_ = 0;
    if (out_.size() >= kBufferBytes) return flush();
    return {};
}

Result<void> StreamWriter::flush() {
    TRY(write_all(fd_, out_));
    out_.clear();
    return {};
}

Result<void> StreamWriter::header() {
    TRY(put(kMagic));
    TRY(put(le(kStreamVersion)));
    crc_ = 0;  // the header has no CRC of its own: a wrong one is refused by name
    return {};
}

Result<void> StreamWriter::config(std::string_view json) {
    const uint8_t type = static_cast<uint8_t>(MessageType::Config);
    const uint32_t n = static_cast<uint32_t>(json.size());
    if (json.size() > kMaxConfigBytes) return fail("migration: the configuration is {} bytes, over {}", json.size(), kMaxConfigBytes);
    TRY(put(le(type)));
    TRY(put(le(n)));
    TRY(put(std::span(reinterpret_cast<const uint8_t*>(json.data()), json.size())));
    TRY(end());
    return flush();  // the destination answers it
}

Result<void> StreamWriter::pages(uint64_t gpa, std::span<const uint8_t> data) {
    const uint8_t type = static_cast<uint8_t>(MessageType::Pages);
    const uint32_t count = static_cast<uint32_t>(data.size() / kPageSize);
    TRY(put(le(type)));
    TRY(put(le(gpa)));
    TRY(put(le(count)));
    TRY(put(data));
    return end();
}

Result<void> StreamWriter::zero(uint64_t gpa, uint32_t count) {
    const uint8_t type = static_cast<uint8_t>(MessageType::Zero);
    TRY(put(le(type)));
    TRY(put(le(gpa)));
    TRY(put(le(count)));
    return end();
}

Result<void> StreamWriter::state(std::span<const uint8_t> file) {
    const uint8_t type = static_cast<uint8_t>(MessageType::State);
    const uint64_t n = file.size();
    TRY(put(le(type)));
    TRY(put(le(n)));
    TRY(put(file));
    return end();
}

Result<void> StreamWriter::done() {
    const uint8_t type = static_cast<uint8_t>(MessageType::Done);
    TRY(put(le(type)));
    TRY(end());
    return flush();
}

// From `in_`, refilled by one read of up to kBufferBytes at a time.
Result<void> StreamReader::get(std::span<uint8_t> b, std::string_view what) {
    size_t done = 0;
    while (done < b.size()) {
        if (pos_ == in_.size()) {
            in_.resize(kBufferBytes);
            ssize_t n;
            do n = ::read(fd_, in_.data(), in_.size());
            while (n < 0 && errno == EINTR);
            if (n < 0) return fail_errno("migration stream: reading {}", what);
            if (n == 0) {
                in_.clear();
                pos_ = 0;
                return bad_request("migration stream: it ended in {} (the other side closed the connection)", what);
            }
            in_.resize(static_cast<size_t>(n));
            pos_ = 0;
        }
        const size_t k = std::min(b.size() - done, in_.size() - pos_);
        std::memcpy(b.data() + done, in_.data() + pos_, k);
        pos_ += k;
        done += k;
    }
    read_ += b.size();
    crc_ = crc32c(b, crc_);
    return {};
}

namespace {
const char* type_name(MessageType t) {
    switch (t) {
    case MessageType::Config: return "CONFIG";
    case MessageType::Pages: return "PAGES";
    case MessageType::State: return "STATE";
    case MessageType::Done: return "DONE";
    case MessageType::Zero: return "ZERO";
    }
    return "?";
}
}  // namespace

Result<void> StreamReader::end() {
    const uint32_t want = crc_;
    uint32_t got = 0;
    TRY(get(le_out(got), "a message's CRC"));
    crc_ = 0;
    if (got != want)
        return bad_request("migration stream: {} ending at byte {}: CRC-32C {:#010x}, the data's is {:#010x} "
                           "(corrupted on the way)", type_name(type_), read_, got, want);
    return {};
}

Result<void> StreamReader::header() {
    uint8_t magic[8];
    uint32_t version = 0;
    TRY(get(magic, "its header"));
    if (std::memcmp(magic, kMagic, sizeof magic) != 0)
        return bad_request("migration stream: no KESTRLMG header (not a kestrel migration stream)");
    TRY(get(le_out(version), "its header"));
    crc_ = 0;
    if (version != kStreamVersion)
        return bad_request("migration stream: version {}, this kestrel reads {}", version, kStreamVersion);
    return {};
}

Result<MessageType> StreamReader::next() {
    uint8_t type = 0;
    crc_ = 0;
    TRY(get(le_out(type), "a message type"));
    if (type < 1 || type > 5) return bad_request("migration stream: message type {} at byte {}", type, read_ - 1);
    type_ = static_cast<MessageType>(type);
    return type_;
}

Result<std::string> StreamReader::config() {
    uint32_t n = 0;
    TRY(get(le_out(n), "CONFIG's length"));
    if (n > kMaxConfigBytes) return bad_request("migration stream: CONFIG of {} bytes, over {}", n, kMaxConfigBytes);
    std::string s(n, '\0');
    TRY(get(std::span(reinterpret_cast<uint8_t*>(s.data()), n), "CONFIG"));
    TRY(end());
    return s;
}

Result<StreamReader::Run> StreamReader::run() {
    Run r{};
    TRY(get(le_out(r.gpa), "a PAGES header"));
    TRY(get(le_out(r.count), "a PAGES header"));
    if (r.gpa % kPageSize != 0 || r.count == 0 || r.count > kMaxRunPages)
        return bad_request("migration stream: {} at {:#x}, {} pages: not page aligned or not 1..{}", type_name(type_),
                           r.gpa, r.count, kMaxRunPages);
    return r;
}

Result<void> StreamReader::page_data(std::span<uint8_t> into) { return get(into, "PAGES data"); }

Result<std::vector<uint8_t>> StreamReader::state() {
    uint64_t n = 0;
    TRY(get(le_out(n), "STATE's length"));
    if (n > kMaxStateBytes) return bad_request("migration stream: STATE of {} bytes, over {}", n, kMaxStateBytes);
    std::vector<uint8_t> b(n);
    TRY(get(b, "STATE"));
    TRY(end());
    return b;
}

}  // namespace kestrel::migration
