#include "vmm/api/api_request.hpp"

namespace kestrel::api {

namespace {

Result<json> parse_body(std::string_view body, std::string_view what) {
    if (body.size() > kMaxBodyBytes)
        return bad_request("{}: the body is {} bytes, more than the {} allowed", what, body.size(), kMaxBodyBytes);
    json j = json::parse(body.begin(), body.end(), nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded()) return bad_request("{}: the body is not valid JSON", what);
    return j;
}

// "/drives/ID" -> "ID" when `path` starts with prefix and the rest is one segment.
std::optional<std::string_view> id_after(std::string_view path, std::string_view prefix) {
    if (!path.starts_with(prefix)) return std::nullopt;
    auto id = path.substr(prefix.size());
    if (id.empty() || id.find('/') != std::string_view::npos) return std::nullopt;
    return id;
}

Result<ApiRequest> parse_action(const json& j) {
    if (!j.is_object() || !j.contains("action_type") || !j["action_type"].is_string())
        return bad_request("actions: the body must be {{\"action_type\": \"InstanceStart\"|\"SendCtrlAltDel\"|\"FlushMetrics\"}}");
    if (j.size() != 1) return bad_request("actions: only the field 'action_type' is allowed");
    const auto a = j["action_type"].get<std::string>();
    if (a == "InstanceStart") return ApiRequest{Op::InstanceStart, {}};
    if (a == "SendCtrlAltDel") return ApiRequest{Op::SendCtrlAltDel, {}};
    if (a == "FlushMetrics") return ApiRequest{Op::FlushMetrics, {}};
    return bad_request("actions: unknown action_type '{}' (InstanceStart, SendCtrlAltDel, FlushMetrics)", a);
}

Result<ApiRequest> parse_vm_state(const json& j) {
    if (!j.is_object() || j.size() != 1 || !j.contains("state") || !j["state"].is_string())
        return bad_request("vm: the body must be {{\"state\": \"Paused\"|\"Resumed\"}}");
    const auto s = j["state"].get<std::string>();
    if (s == "Paused") return ApiRequest{Op::PauseVm, {}};
    if (s == "Resumed") return ApiRequest{Op::ResumeVm, {}};
    return bad_request("vm: state '{}' is not Paused or Resumed", s);
}

Result<ApiRequest> parse_get(std::string_view path) {
    if (path == "/" || path.empty()) return ApiRequest{Op::GetInstanceInfo, {}};
    if (path == "/version") return ApiRequest{Op::GetVersion, {}};
    if (path == "/machine-config") return ApiRequest{Op::GetMachineConfig, {}};
    if (path == "/vm/config") return ApiRequest{Op::GetVmConfig, {}};
    if (path == "/vm/info") return ApiRequest{Op::GetVmInfo, {}};
    if (path == "/vm/ram-digest") return ApiRequest{Op::GetRamDigest, {}};
    if (path == "/metrics") return ApiRequest{Op::GetMetrics, {}};
    if (path == "/migrate") return ApiRequest{Op::GetMigrate, {}};
    if (path == "/balloon") return ApiRequest{Op::GetBalloon, {}};
    return bad_request("GET {}: no such resource", path);
}

Result<ApiRequest> parse_put(std::string_view path, const json& j) {
    if (path == "/actions") return parse_action(j);
    if (path == "/boot-source") {
        VmConfig scratch;
        TRY(apply_boot_source(scratch, j));
        return ApiRequest{Op::PutBootSource, j};
    }
    if (path == "/machine-config") {
        VmConfig scratch;
        TRY(apply_machine_config(scratch, j, false));
        return ApiRequest{Op::PutMachineConfig, j};
    }
    if (auto id = id_after(path, "/drives/")) return ApiRequest{Op::PutDrive, TRY(parse_drive(j, *id))};
    if (auto id = id_after(path, "/network-interfaces/"))
        return ApiRequest{Op::PutNetwork, TRY(parse_network_interface(j, *id))};
    if (path == "/vsock") return ApiRequest{Op::PutVsock, TRY(parse_vsock(j))};
    if (path == "/entropy") return ApiRequest{Op::PutEntropy, TRY(parse_entropy(j))};
    if (path == "/balloon") return ApiRequest{Op::PutBalloon, TRY(parse_balloon(j))};
    if (path == "/logger") return ApiRequest{Op::PutLogger, TRY(parse_logger(j))};
    if (path == "/metrics") return ApiRequest{Op::PutMetrics, TRY(parse_metrics(j))};
    if (path == "/vm/device-state/save" || path == "/vm/device-state/load") {
        return ApiRequest{path.ends_with("save") ? Op::SaveDeviceState : Op::LoadDeviceState,
                          TRY(parse_device_state_path(j))};
    }
    if (path == "/snapshot/create") return ApiRequest{Op::SnapshotCreate, TRY(parse_snapshot_create(j))};
    if (path == "/snapshot/load") return ApiRequest{Op::SnapshotLoad, TRY(parse_snapshot_load(j))};
    if (path == "/migrate") return ApiRequest{Op::Migrate, TRY(parse_migrate(j))};
    return bad_request("PUT {}: no such resource", path);
}

Result<ApiRequest> parse_patch(std::string_view path, const json& j) {
    if (path == "/vm") return parse_vm_state(j);
    if (path == "/machine-config") {
        VmConfig scratch;
        TRY(apply_machine_config(scratch, j, true));
        return ApiRequest{Op::PatchMachineConfig, j};
    }
    if (auto id = id_after(path, "/drives/")) return ApiRequest{Op::PatchDrive, TRY(parse_drive_patch(j, *id))};
    if (auto id = id_after(path, "/network-interfaces/"))
        return ApiRequest{Op::PatchNetwork, TRY(parse_network_patch(j, *id))};
    return bad_request("PATCH {}: no such resource", path);
}

}  // namespace

Result<ApiRequest> parse_api_request(std::string_view method, std::string_view path, std::string_view body) {
    // nlohmann::json throws on type errors; fc_json checks types first, but nothing from a
    // request may escape as an exception.
    try {
        if (method == "GET") return parse_get(path);
        if (method == "PUT") return parse_put(path, TRY(parse_body(body, path)));
        if (method == "PATCH") return parse_patch(path, TRY(parse_body(body, path)));
        return bad_request("{} {}: method not supported (GET, PUT, PATCH)", method, path);
    } catch (const std::exception& e) {
        return bad_request("{} {}: {}", method, path, e.what());
    }
}

// A message quotes the request's path (any bytes, %FF included) and a configuration may hold
// command-line paths that are not UTF-8: nlohmann's dump() throws on those by default, which
// on the controller's thread ended kestrel. They are shown as U+FFFD instead.
std::string to_text(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

ApiResponse fault(const Error& e) {
    const char* kind = e.kind == ErrorKind::BadRequest   ? "BadRequest"
                       : e.kind == ErrorKind::NotAllowed ? "NotAllowed"
                                                         : "HostFailure";
    // Firecracker answers every failed request 400 with {"fault_message"}; kestrel adds the
    // category so programs need not parse the sentence.
    json j = {{"fault_message", e.what()}, {"fault_kind", kind}};
    return ApiResponse{400, to_text(j), "application/json"};
}

ApiResponse ok_json(const json& j) { return ApiResponse{200, to_text(j), "application/json"}; }

}  // namespace kestrel::api
