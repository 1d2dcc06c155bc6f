// A fresh directory under $TEST_TMPDIR (or /tmp), removed with everything in
// it when the object goes away.
#ifndef FLEET_CONTROLLER_TESTING_TEMP_DIR_H_
#define FLEET_CONTROLLER_TESTING_TEMP_DIR_H_

#include <stdlib.h>

#include <string>

#include "common/files.h"

namespace fleet::controller::testing {

class TempDir {
 public:
  TempDir() {
    const char* base = getenv("TEST_TMPDIR");
    std::string pattern =
        std::string(base != nullptr ? base : "/tmp") + "/fleet-XXXXXX";
    if (mkdtemp(pattern.data()) != nullptr) path_ = pattern;
  }
  ~TempDir() {
    if (!path_.empty()) (void)RemoveTree(path_);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  // Empty if the directory could not be created.
  const std::string& path() const { return path_; }
  std::string Join(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

}  // namespace fleet::controller::testing

#endif  // FLEET_CONTROLLER_TESTING_TEMP_DIR_H_
