#include "agent/failpoint.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <unistd.h>

#include <atomic>
#include <string>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace fleet::agent {
namespace {

struct ArmedFailpoint {
  std::string point;  // empty: no failpoint armed
  int64_t occurrence = 1;
  std::string marker;
  bool stop = false;  // SIGSTOP instead of SIGKILL
};

ArmedFailpoint ReadEnvironment() {
  ArmedFailpoint armed;
  const char* spec = getenv(kFailpointEnv);
  if (spec == nullptr || *spec == '\0') return armed;
  std::string value = spec;
  // The count is after the LAST colon, and only if it is a number, so a
  // point name may itself contain colons.
  const size_t colon = value.rfind(':');
  int64_t n = 0;
  if (colon != std::string::npos &&
      absl::SimpleAtoi(value.substr(colon + 1), &n) && n >= 1) {
    armed.occurrence = n;
    value.resize(colon);
  }
  armed.point = value;
  if (const char* marker = getenv(kFailpointMarkerEnv)) armed.marker = marker;
  if (const char* action = getenv(kFailpointActionEnv)) {
    armed.stop = std::string(action) == "stop";
  }
  return armed;
}

void WriteStderr(const std::string& line) {
  // Raw write: the process dies next, nothing buffered would come out.
  (void)!write(STDERR_FILENO, line.data(), line.size());
}

}  // namespace

void Failpoint(absl::string_view point) {
  static const ArmedFailpoint* const armed =
      new ArmedFailpoint(ReadEnvironment());
  if (armed->point.empty() || point != armed->point) return;
  static std::atomic<int64_t> reached{0};
  if (reached.fetch_add(1) + 1 != armed->occurrence) return;
  if (!armed->marker.empty()) {
    int fd = open(armed->marker.c_str(),
                  O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0) {
      if (errno != EEXIST) {
        WriteStderr(absl::StrCat("failpoint ", point, ": cannot create ",
                                 armed->marker, " (errno ", errno,
                                 "); not firing\n"));
      }
      return;  // fired already in an earlier process
    }
    const std::string line = absl::StrCat(point, " ", getpid());
    (void)!write(fd, line.data(), line.size());
    fsync(fd);
    close(fd);
  }
  WriteStderr(absl::StrCat("failpoint ", point, " reached (occurrence ",
                           armed->occurrence,
                           "): ", armed->stop ? "SIGSTOP" : "SIGKILL", "\n"));
  raise(armed->stop ? SIGSTOP : SIGKILL);
}

}  // namespace fleet::agent
