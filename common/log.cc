#include "common/log.h"

#include <errno.h>
#include <unistd.h>

#include <atomic>
#include <string>

#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace fleet {
namespace {

// Written once by InitLogging before threads start; read by every Log call.
std::string* component = new std::string("fleet");
std::atomic<int> min_level{static_cast<int>(LogLevel::kInfo)};

absl::Mutex* WriteMutex() {
  static absl::Mutex* const mu = new absl::Mutex();
  return mu;
}

const char* LevelName(LogLevel level) {
  switch (level) {
    case LogLevel::kDebug:
      return "debug";
    case LogLevel::kInfo:
      return "info";
    case LogLevel::kWarning:
      return "warning";
    case LogLevel::kError:
      return "error";
  }
  return "unknown";
}

std::string ToStd(absl::string_view s) {
  return std::string(s.data(), s.size());
}

}  // namespace

void InitLogging(absl::string_view name, LogLevel level) {
  *component = ToStd(name);
  min_level.store(static_cast<int>(level), std::memory_order_relaxed);
}

bool ParseLogLevel(absl::string_view text, LogLevel* level) {
  if (text == "debug") {
    *level = LogLevel::kDebug;
  } else if (text == "info") {
    *level = LogLevel::kInfo;
  } else if (text == "warning" || text == "warn") {
    *level = LogLevel::kWarning;
  } else if (text == "error") {
    *level = LogLevel::kError;
  } else {
    return false;
  }
  return true;
}

void Log(LogLevel level, absl::string_view msg, const nlohmann::json& fields) {
  if (static_cast<int>(level) < min_level.load(std::memory_order_relaxed)) {
    return;
  }
  // ordered_json keeps ts/level/component/msg first, which is what a human
  // reading the raw stream scans for.
  nlohmann::ordered_json line;
  line["ts"] = absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", absl::Now(),
                                absl::UTCTimeZone());
  line["level"] = LevelName(level);
  line["component"] = *component;
  line["msg"] = ToStd(msg);
  if (fields.is_object()) {
    for (auto it = fields.begin(); it != fields.end(); ++it) {
      // The fixed keys win so a caller's field cannot spoof them.
      if (line.contains(it.key())) continue;
      line[it.key()] = it.value();
    }
  } else if (!fields.is_null()) {
    line["fields"] = fields;
  }
  std::string text;
  try {
    text = line.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  } catch (...) {
    // dump() with `replace` does not throw on bad UTF-8; this guards against
    // anything else (e.g. allocation) ever escaping a log call.
    text = R"({"level":"error","msg":"log line could not be serialized"})";
  }
  text.push_back('\n');

  absl::MutexLock lock(WriteMutex());
  const char* p = text.data();
  size_t left = text.size();
  while (left > 0) {
    ssize_t n = write(STDERR_FILENO, p, left);
    if (n < 0) {
      if (errno == EINTR) continue;
      return;  // Nowhere left to report a failing stderr.
    }
    p += n;
    left -= static_cast<size_t>(n);
  }
}

}  // namespace fleet
