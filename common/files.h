// POSIX file helpers with the durability rules fleet relies on: data is
// fsync'd before a rename makes it visible, and the directory is fsync'd
// after, so after a crash a path holds either the old or the new complete
// file, never a partial one. Errors carry errno and the path.
#ifndef FLEET_COMMON_FILES_H_
#define FLEET_COMMON_FILES_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace fleet {

// mkdir -p with `mode` for created directories.
absl::Status MakeDirs(const std::string& path, int mode = 0755);

absl::StatusOr<std::string> ReadFile(const std::string& path);

// Writes `data` to `path.tmp-XXXX`, fsyncs it, renames over `path`, fsyncs
// the directory. `mode` is applied before the rename.
absl::Status WriteFileAtomically(const std::string& path,
                                 absl::string_view data, int mode = 0644);

// Creates `path` new (ALREADY_EXISTS if it exists, so nothing is ever
// overwritten), with exactly `mode` whatever the umask, writes `data`, fsyncs
// the file and its directory. On failure the half-written file is removed.
absl::Status WriteNewFile(const std::string& path, absl::string_view data,
                          int mode);

absl::Status FsyncPath(const std::string& path);  // a file or a directory
absl::Status FsyncDir(const std::string& dir);
// rename(2) then fsync of the destination's directory.
absl::Status DurableRename(const std::string& from, const std::string& to);

// NOT_FOUND if missing.
absl::StatusOr<uint64_t> FileSize(const std::string& path);
bool PathExists(const std::string& path);
// Removes a file; OK if it did not exist.
absl::Status RemoveFile(const std::string& path);
// rm -r; OK if it did not exist.
absl::Status RemoveTree(const std::string& path);

std::string Dirname(absl::string_view path);
std::string Basename(absl::string_view path);
std::string JoinPath(absl::string_view a, absl::string_view b);

// Free bytes available to this user on the file system holding `path`.
absl::StatusOr<uint64_t> FreeBytes(const std::string& path);

}  // namespace fleet

#endif  // FLEET_COMMON_FILES_H_
