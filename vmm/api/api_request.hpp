// ApiRequest: one HTTP request of kestrel's API (Firecracker's paths, methods and bodies plus
// kestrel's extensions), parsed and validated on the API thread into what the controller
// acts on. parse_api_request is a pure function of (method, path, body): the fuzz target
// tests/fuzz/fuzz_api_request.cpp drives it with arbitrary bytes.
#pragma once

#include <string>
#include <string_view>
#include <variant>

#include "vmm/api/fc_json.hpp"

namespace kestrel::api {

enum class Op {
    GetInstanceInfo,   // GET /
    GetVersion,        // GET /version
    GetMachineConfig,  // GET /machine-config
    GetVmConfig,       // GET /vm/config
    GetVmInfo,         // GET /vm/info (kestrel)
    GetMetrics,        // GET /metrics (kestrel: Prometheus text)
    GetRamDigest,      // GET /vm/ram-digest (kestrel, for tests: paused VMs only)
    PutBootSource,     // PUT /boot-source
    PutMachineConfig,  // PUT /machine-config
    PatchMachineConfig,
    PutDrive,          // PUT /drives/{id}
    PatchDrive,
    PutNetwork,        // PUT /network-interfaces/{id}
    PatchNetwork,
    PutVsock,          // PUT /vsock
    PutEntropy,        // PUT /entropy
    PutBalloon,        // PUT /balloon
    GetBalloon,        // GET /balloon
    PutLogger,         // PUT /logger
    PutMetrics,        // PUT /metrics
    InstanceStart,     // PUT /actions {"action_type": ...}
    SendCtrlAltDel,
    FlushMetrics,
    PauseVm,           // PATCH /vm {"state": "Paused"}
    ResumeVm,          //                     "Resumed"
    SnapshotCreate,    // PUT /snapshot/create
    SnapshotLoad,      // PUT /snapshot/load
    SaveDeviceState,   // PUT /vm/device-state/save {"path"} (kestrel, for tests: paused VMs only)
    LoadDeviceState,   // PUT /vm/device-state/load {"path"}
    Migrate,           // PUT /migrate (kestrel: live migration)
    GetMigrate,        // GET /migrate: its progress
};

using Payload = std::variant<std::monostate, json, DiskConfig, DrivePatch, NetConfig, NetPatch, VsockConfig,
                             std::optional<RateLimiterConfig>, BalloonConfig, LoggerConfig, std::string, SnapshotCreateRequest,
                             SnapshotLoadRequest, MigrateRequest>;

struct ApiRequest {
    Op op;
    // boot-source / machine-config: the validated JSON body (applied by the controller to the
    // configuration it holds); drives, interfaces etc.: the parsed object; metrics: its path.
    Payload payload;
};

// Bodies larger than this are refused before parsing (Firecracker's limit is 51200 bytes).
inline constexpr size_t kMaxBodyBytes = 51200;

// method is "GET", "PUT" or "PATCH"; path without query string. Errors are BadRequest.
Result<ApiRequest> parse_api_request(std::string_view method, std::string_view path, std::string_view body);

struct ApiResponse {
    int status = 204;  // 204 no body, 200 with body, 400 fault
    std::string body;
    std::string content_type = "application/json";
};

ApiResponse fault(const Error& e);
// JSON text of an answer; bytes that are not UTF-8 become U+FFFD (dump() would throw).
std::string to_text(const json& j);
ApiResponse ok_json(const json& j);

}  // namespace kestrel::api
