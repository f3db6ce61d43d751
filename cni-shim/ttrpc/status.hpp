// The outcome of a ttrpc call: google.rpc.Status as ttrpc carries it in Response.status,
// with the gRPC status codes (github.com/grpc/grpc/blob/master/doc/statuscodes.md), which
// containerd maps back to its errdefs (NotFound, AlreadyExists, FailedPrecondition, ...).
#pragma once

#include <cstdint>
#include <string>

namespace kestrel::ttrpc {

enum class Code : std::int32_t {
    Ok = 0,
    Cancelled = 1,
    Unknown = 2,
    InvalidArgument = 3,
    DeadlineExceeded = 4,
    NotFound = 5,
    AlreadyExists = 6,
    PermissionDenied = 7,
    ResourceExhausted = 8,
    FailedPrecondition = 9,
    Aborted = 10,
    OutOfRange = 11,
    Unimplemented = 12,
    Internal = 13,
    Unavailable = 14,
    DataLoss = 15,
    Unauthenticated = 16,
};

struct Status {
    Code code = Code::Unknown;
    std::string message;
};

}  // namespace kestrel::ttrpc
