// Structured logging: one JSON object per line on stderr.
//
//   LogInfo("rollout created", {{"rollout_id", id}, {"targets", n}});
//   LogError("swap failed", {{"path", path}, {"error", status.ToString()}});
//
// Each line: {"ts":"2026-11-23T09:00:00.123Z","level":"info",
//             "component":"controller","msg":"...", ...fields}.
// Thread-safe: lines from different threads never interleave.
#ifndef FLEET_COMMON_LOG_H_
#define FLEET_COMMON_LOG_H_

#include <string>

#include "absl/strings/string_view.h"
#include "nlohmann/json.hpp"

namespace fleet {

enum class LogLevel { kDebug = 0, kInfo = 1, kWarning = 2, kError = 3 };

// Set once at start-up (before threads): the "component" field and the
// minimum level printed. Defaults: "fleet", kInfo.
void InitLogging(absl::string_view component,
                 LogLevel min_level = LogLevel::kInfo);
// Parses "debug", "info", "warning", "error"; false if unknown.
bool ParseLogLevel(absl::string_view text, LogLevel* level);

void Log(LogLevel level, absl::string_view msg,
         const nlohmann::json& fields = nlohmann::json::object());

inline void LogDebug(absl::string_view msg,
                     const nlohmann::json& fields = nlohmann::json::object()) {
  Log(LogLevel::kDebug, msg, fields);
}
inline void LogInfo(absl::string_view msg,
                    const nlohmann::json& fields = nlohmann::json::object()) {
  Log(LogLevel::kInfo, msg, fields);
}
inline void LogWarning(absl::string_view msg, const nlohmann::json& fields =
                                                  nlohmann::json::object()) {
  Log(LogLevel::kWarning, msg, fields);
}
inline void LogError(absl::string_view msg,
                     const nlohmann::json& fields = nlohmann::json::object()) {
  Log(LogLevel::kError, msg, fields);
}

}  // namespace fleet

#endif  // FLEET_COMMON_LOG_H_
