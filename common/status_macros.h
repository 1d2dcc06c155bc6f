// RETURN_IF_ERROR / ASSIGN_OR_RETURN for absl::Status and absl::StatusOr.
//
// Abseil 20220623 (Debian 12) ships neither; these are the project's one pair.
//
//   RETURN_IF_ERROR(file.Sync());
//   ASSIGN_OR_RETURN(Digest d, DigestFile(path));
#ifndef FLEET_COMMON_STATUS_MACROS_H_
#define FLEET_COMMON_STATUS_MACROS_H_

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define FLEET_STATUS_CONCAT_INNER_(a, b) a##b
#define FLEET_STATUS_CONCAT_(a, b) FLEET_STATUS_CONCAT_INNER_(a, b)

#define RETURN_IF_ERROR(expr)                      \
  do {                                             \
    ::absl::Status fleet_status_ = (expr);         \
    if (!fleet_status_.ok()) return fleet_status_; \
  } while (0)

#define FLEET_ASSIGN_OR_RETURN_IMPL_(statusor, lhs, expr)  \
  auto statusor = (expr);                                  \
  if (!statusor.ok()) return std::move(statusor).status(); \
  lhs = std::move(statusor).value()

#define ASSIGN_OR_RETURN(lhs, expr) \
  FLEET_ASSIGN_OR_RETURN_IMPL_(     \
      FLEET_STATUS_CONCAT_(fleet_statusor_, __LINE__), lhs, expr)

#endif  // FLEET_COMMON_STATUS_MACROS_H_
