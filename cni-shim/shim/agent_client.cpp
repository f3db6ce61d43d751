#include "cni-shim/shim/agent_client.hpp"

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <spdlog/spdlog.h>

#include "cni-shim/shim/pod_key.hpp"
#include "cni-shim/ttrpc/unix_socket.hpp"

namespace kestrel::shim {

namespace {
Result<void> read_exact(int fd, char* buf, std::size_t n) {
    std::size_t got = 0;
    while (got < n) {
        ssize_t r = ::read(fd, buf + got, n - got);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) return fail_errno("read from agent");
        if (r == 0) return fail("agent connection closed");
        got += static_cast<std::size_t>(r);
    }
    return {};
}

Result<void> set_blocking(int fd) {
    int fl = ::fcntl(fd, F_GETFL);
    if (fl < 0 || ::fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) < 0) return fail_errno("fcntl");
    return {};
}
}  // namespace

std::uint32_t json_u32(const nlohmann::json& j, const char* key) {
    if (!j.is_object()) return 0;
    auto it = j.find(key);
    if (it == j.end() || !it->is_number_integer()) return 0;
    if (!it->is_number_unsigned() && it->get<std::int64_t>() < 0) return 0;
    if (it->get<std::uint64_t>() > 0xffffffffu) return 0;
    return it->get<std::uint32_t>();
}

bool json_true(const nlohmann::json& j, const char* key) {
    if (!j.is_object()) return false;
    auto it = j.find(key);
    return it != j.end() && it->is_boolean() && it->get<bool>();
}

std::string encode_agent_frame(const nlohmann::json& j) {
    std::string body = j.dump();
    auto n = static_cast<std::uint32_t>(body.size());
    std::string out;
    out.reserve(4 + body.size());
    out.push_back(static_cast<char>(n >> 24));
    out.push_back(static_cast<char>(n >> 16));
    out.push_back(static_cast<char>(n >> 8));
    out.push_back(static_cast<char>(n));
    return out + body;
}

Result<nlohmann::json> read_agent_frame(int fd) {
    unsigned char hdr[4];
    TRY(read_exact(fd, reinterpret_cast<char*>(hdr), 4));
    std::uint32_t n = (std::uint32_t{hdr[0]} << 24) | (std::uint32_t{hdr[1]} << 16) | (std::uint32_t{hdr[2]} << 8) | hdr[3];
    if (n == 0 || n > kMaxAgentFrame) return fail("agent frame of {} bytes (allowed 1 to {})", n, kMaxAgentFrame);
    std::string body(n, '\0');
    TRY(read_exact(fd, body.data(), n));
    auto j = nlohmann::json::parse(body, nullptr, false);
    if (j.is_discarded() || !j.is_object()) return fail("agent frame is not a JSON object");
    return j;
}

Result<UniqueFd> vsock_connect(const std::string& uds_path, std::uint32_t port, std::chrono::milliseconds timeout) {
    UniqueFd fd = TRY(ttrpc::connect_unix(uds_path, timeout));
    TRY(set_blocking(fd.get()));
    timeval tv{static_cast<time_t>(timeout.count() / 1000), static_cast<suseconds_t>((timeout.count() % 1000) * 1000)};
    ::setsockopt(fd.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    TRY(ttrpc::write_all(fd.get(), fmt::format("CONNECT {}\n", port)));
    // README "--vsock": the answer is one line `OK <host_port>`; read it byte by byte so
    // nothing of the stream behind it is consumed.
    std::string line;
    for (;;) {
        char c;
        ssize_t r = ::read(fd.get(), &c, 1);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return fail("vsock {} port {}: no answer to CONNECT (guest not listening yet?)", uds_path, port);
        if (c == '\n') break;
        if (line.size() >= 64) return fail("vsock {}: handshake line too long", uds_path);
        line.push_back(c);
    }
    if (!line.starts_with("OK ")) return fail("vsock {} port {}: handshake answered '{}'", uds_path, port, line);
    timeval none{};
    ::setsockopt(fd.get(), SOL_SOCKET, SO_RCVTIMEO, &none, sizeof none);
    return fd;
}

Result<std::unique_ptr<AgentClient>> AgentClient::open(UniqueFd control, ExitHandler on_exit) {
    std::unique_ptr<AgentClient> c(new AgentClient());
    c->fd_ = std::move(control);
    c->on_exit_ = std::move(on_exit);
    c->reader_ = std::thread([p = c.get()] { p->read_loop(); });
    return c;
}

AgentClient::~AgentClient() {
    ::shutdown(fd_.get(), SHUT_RDWR);
    if (reader_.joinable()) reader_.join();
}

bool AgentClient::closed() const {
    std::lock_guard lk(mu_);
    return closed_;
}

void AgentClient::read_loop() {
    for (;;) {
        auto frame = read_agent_frame(fd_.get());
        if (!frame) {
            spdlog::warn("agent control connection: {}", frame.error().what());
            break;
        }
        nlohmann::json& j = *frame;
        if (j.contains("event")) {
            // PROTOCOL.md "Events": {"event":"exit","container","exec","status","exited_at_ns"}.
            if (j["event"] != "exit") continue;
            AgentExit e;
            auto str = [&](const char* k) { return j.contains(k) && j[k].is_string() ? j[k].get<std::string>() : std::string(); };
            e.container = str("container");
            e.exec = str("exec");
            if (!valid_identifier(e.container) || (!e.exec.empty() && !valid_identifier(e.exec))) {
                spdlog::warn("agent exit event with bad ids ignored");
                continue;
            }
            e.status = json_u32(j, "status");
            if (j.contains("exited_at_ns") && j["exited_at_ns"].is_number_integer()) e.exited_at_ns = j["exited_at_ns"].get<std::int64_t>();
            if (on_exit_) on_exit_(std::move(e));
            continue;
        }
        if (!j.contains("id") || !j["id"].is_number_unsigned()) {
            spdlog::warn("agent answer without id: {}", j.dump().substr(0, 200));
            continue;
        }
        auto id = j["id"].get<std::uint64_t>();
        std::lock_guard lk(mu_);
        auto it = pending_.find(id);
        if (it == pending_.end()) continue;  // its caller gave up waiting
        it->second = std::move(j);
        cv_.notify_all();
    }
    std::lock_guard lk(mu_);
    closed_ = true;
    cv_.notify_all();
}

Result<nlohmann::json> AgentClient::call(nlohmann::json request, std::chrono::milliseconds timeout) {
    std::uint64_t id;
    {
        std::lock_guard lk(mu_);
        if (closed_) return fail("the pod VM's agent is gone");
        id = next_id_++;
        pending_.emplace(id, std::nullopt);
    }
    request["id"] = id;
    std::string op = request.contains("op") && request["op"].is_string() ? request["op"].get<std::string>() : "";
    std::string frame = encode_agent_frame(request);
    // The agent closes the whole control connection on an oversized frame (PROTOCOL.md
    // "Frames"): refuse such a request here, so one big spec cannot cut the pod off.
    if (frame.size() - 4 > kMaxAgentFrame) {
        std::lock_guard lk(mu_);
        pending_.erase(id);
        return bad_request("agent {}: request of {} bytes, more than the agent's 1 MiB frame limit", op, frame.size() - 4);
    }
    {
        std::lock_guard lk(write_mu_);
        if (auto w = ttrpc::write_all(fd_.get(), frame); !w) {
            std::lock_guard lk2(mu_);
            pending_.erase(id);
            return std::unexpected(context(w.error(), "agent " + op));
        }
    }
    std::unique_lock lk(mu_);
    bool got = cv_.wait_for(lk, timeout, [&] { return closed_ || pending_[id].has_value(); });
    auto answer = std::move(pending_[id]);
    pending_.erase(id);
    if (!answer) return fail("agent {}: {}", op, got ? "connection closed" : "no answer in time");
    if (!json_true(*answer, "ok")) {
        std::string err = (*answer).contains("error") && (*answer)["error"].is_string() ? (*answer)["error"].get<std::string>() : "failed";
        return bad_request("agent {}: {}", op, err);
    }
    return std::move(*answer);
}

}  // namespace kestrel::shim
