// The host side of kestrel-agent's wire protocol (cni-shim/agent/PROTOCOL.md): connections
// through kestrel's hybrid vsock (`CONNECT <port>\n` → `OK <n>\n`), length-prefixed JSON
// frames, one control connection with requests answered by id and exit events pushed
// between answers, and stdio attachments that become raw byte streams.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>

#include <nlohmann/json.hpp>

#include "vmm/base/error.hpp"
#include "vmm/base/fd.hpp"

namespace kestrel::shim {

// PROTOCOL.md "Frames": a u32 big-endian length, 1 B to 1 MiB, then one JSON object.
inline constexpr std::uint32_t kMaxAgentFrame = 1u << 20;

std::string encode_agent_frame(const nlohmann::json& j);
// Field readers for the agent's answers that never throw (the guest is untrusted: a field
// of the wrong type reads as absent). u32: 0 unless an unsigned integer <= UINT32_MAX.
std::uint32_t json_u32(const nlohmann::json& j, const char* key);
bool json_true(const nlohmann::json& j, const char* key);

// Reads one frame from a blocking fd. Fails on EOF, a bad length or bad JSON.
Result<nlohmann::json> read_agent_frame(int fd);

// Connects through kestrel's vsock unix socket to guest port `port` and completes the
// hybrid handshake; the fd is blocking and carries the guest's byte stream afterwards.
Result<UniqueFd> vsock_connect(const std::string& uds_path, std::uint32_t port, std::chrono::milliseconds timeout);

struct AgentExit {
    std::string container;
    std::string exec;
    std::uint32_t status = 0;
    std::int64_t exited_at_ns = 0;
};

class AgentClient {
public:
    using ExitHandler = std::function<void(AgentExit)>;

    // `connect` makes a connection (vsock_connect or a test's unix socket). The handler runs
    // on the reader thread: it must not call back into the client synchronously.
    static Result<std::unique_ptr<AgentClient>> open(UniqueFd control, ExitHandler on_exit);
    ~AgentClient();

    // One request: `op` plus fields. Returns the answer object when ok, else the agent's
    // error (BadRequest kind) or a transport failure.
    Result<nlohmann::json> call(nlohmann::json request, std::chrono::milliseconds timeout = std::chrono::seconds(30));

    // True once the control connection is gone (agent or VM died).
    bool closed() const;

private:
    AgentClient() = default;
    void read_loop();

    UniqueFd fd_;
    ExitHandler on_exit_;
    std::mutex write_mu_;
    mutable std::mutex mu_;
    std::condition_variable cv_;
    std::uint64_t next_id_ = 1;
    std::map<std::uint64_t, std::optional<nlohmann::json>> pending_;
    bool closed_ = false;
    std::thread reader_;
};

}  // namespace kestrel::shim
