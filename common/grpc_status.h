// Conversions between absl::Status (library code) and grpc::Status (the RPC
// boundary). Codes map one to one; the message is kept.
#ifndef FLEET_COMMON_GRPC_STATUS_H_
#define FLEET_COMMON_GRPC_STATUS_H_

#include <grpcpp/support/status.h>

#include "absl/status/status.h"

namespace fleet {

grpc::Status ToGrpcStatus(const absl::Status& status);
absl::Status FromGrpcStatus(const grpc::Status& status);

}  // namespace fleet

#endif  // FLEET_COMMON_GRPC_STATUS_H_
