// `kestrel snapshot --api-sock SOCK STATE MEM [--diff] [--keep-paused]`: a snapshot of the VM a
// running kestrel serves on SOCK, for people (scripts can use the API directly): PATCH /vm
// Paused, PUT /snapshot/create, then PATCH /vm Resumed unless --keep-paused (a VM that was
// paused already stays paused). Each step's answer is checked; a refusal is reported with the
// API's fault_message and the VM is resumed if this command paused it. Restore with
// `kestrel run --restore STATE --restore-mem MEM` or PUT /snapshot/load.
#pragma once

#include <cstdint>
#include <string>

namespace kestrel {

struct SnapshotClientOptions {
    std::string api_socket;
    std::string state_path, mem_path;
    bool diff = false;
    bool keep_paused = false;
};

// Exit code: 0 taken, 1 refused or failed (said on stderr).
int run_snapshot_client(const SnapshotClientOptions& o);

// `kestrel migrate --api-sock SOCK --to DEST`: PUT /migrate, then GET /migrate every 0.5 s,
// printing its progress, until completed (0) or failed (1, with the reason: the VM keeps
// running in the source).
struct MigrateClientOptions {
    std::string api_socket;
    std::string destination;
    uint32_t downtime_ms = 50;
    uint64_t max_bandwidth = 0;
    bool auto_converge = false;
};
int run_migrate_client(const MigrateClientOptions& o);

}  // namespace kestrel
