#include "common/names.h"

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "common/semver.h"

namespace fleet {
namespace {

bool IsLowerAlnum(char c) {
  return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

bool IsAlnum(char c) { return IsLowerAlnum(c) || (c >= 'A' && c <= 'Z'); }

// Names are quoted escaped so that control characters and NUL show up
// legibly in logs and error messages instead of corrupting them.
std::string Quote(absl::string_view s) {
  return absl::StrCat("\"", absl::CHexEscape(s), "\"");
}

}  // namespace

absl::Status ValidateProductName(absl::string_view product) {
  if (product.empty()) {
    return absl::InvalidArgumentError("product name is empty");
  }
  if (product.size() > 64) {
    return absl::InvalidArgumentError(
        absl::StrCat("product name ", Quote(product.substr(0, 64)),
                     "... is longer than ", "64 bytes"));
  }
  if (!IsLowerAlnum(product[0])) {
    return absl::InvalidArgumentError(absl::StrCat(
        "product name ", Quote(product), " must start with [a-z0-9]"));
  }
  for (char c : product) {
    if (!IsLowerAlnum(c) && c != '.' && c != '_' && c != '-') {
      return absl::InvalidArgumentError(absl::StrCat(
          "product name ", Quote(product), " may contain only [a-z0-9._-]"));
    }
  }
  if (product.find("..") != absl::string_view::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat("product name ", Quote(product), " contains \"..\""));
  }
  return absl::OkStatus();
}

absl::Status ValidatePlatform(absl::string_view platform) {
  static constexpr absl::string_view kOses[] = {"linux", "darwin", "windows"};
  static constexpr absl::string_view kArchs[] = {"amd64", "arm64", "arm", "386",
                                                 "riscv64"};
  size_t slash = platform.find('/');
  if (slash == absl::string_view::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat("platform ", Quote(platform),
                     " must be \"os/arch\", e.g. linux/amd64"));
  }
  absl::string_view os = platform.substr(0, slash);
  absl::string_view arch = platform.substr(slash + 1);
  bool os_ok = false;
  for (absl::string_view known : kOses) os_ok |= (os == known);
  if (!os_ok) {
    return absl::InvalidArgumentError(
        absl::StrCat("platform ", Quote(platform), ": unknown os ", Quote(os),
                     " (known: linux, darwin, windows)"));
  }
  bool arch_ok = false;
  for (absl::string_view known : kArchs) arch_ok |= (arch == known);
  if (!arch_ok) {
    return absl::InvalidArgumentError(
        absl::StrCat("platform ", Quote(platform), ": unknown arch ",
                     Quote(arch), " (known: amd64, arm64, arm, 386, riscv64)"));
  }
  return absl::OkStatus();
}

absl::Status ValidateVersion(absl::string_view version) {
  return SemVer::Parse(version).status();
}

absl::Status ValidateId(absl::string_view id, absl::string_view what) {
  if (id.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(what, " is empty"));
  }
  if (id.size() > 128) {
    return absl::InvalidArgumentError(absl::StrCat(
        what, " ", Quote(id.substr(0, 128)), "... is longer than 128 bytes"));
  }
  if (!IsAlnum(id[0])) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " ", Quote(id), " must start with [A-Za-z0-9]"));
  }
  for (char c : id) {
    if (!IsAlnum(c) && c != '.' && c != '_' && c != '-') {
      return absl::InvalidArgumentError(absl::StrCat(
          what, " ", Quote(id), " may contain only [A-Za-z0-9._-]"));
    }
  }
  return absl::OkStatus();
}

absl::Status ValidateLabel(absl::string_view key, absl::string_view value) {
  if (key.empty()) return absl::InvalidArgumentError("label key is empty");
  if (key.size() > 63) {
    return absl::InvalidArgumentError(absl::StrCat(
        "label key ", Quote(key.substr(0, 63)), "... is longer than 63 bytes"));
  }
  if (!IsLowerAlnum(key[0])) {
    return absl::InvalidArgumentError(
        absl::StrCat("label key ", Quote(key), " must start with [a-z0-9]"));
  }
  for (char c : key) {
    if (!IsLowerAlnum(c) && c != '.' && c != '_' && c != '/' && c != '-') {
      return absl::InvalidArgumentError(absl::StrCat(
          "label key ", Quote(key), " may contain only [a-z0-9._/-]"));
    }
  }
  if (value.size() > 128) {
    return absl::InvalidArgumentError(absl::StrCat(
        "value of label ", Quote(key), " is longer than 128 bytes"));
  }
  for (char c : value) {
    unsigned char u = static_cast<unsigned char>(c);
    if (u < 0x20 || u > 0x7e || c == '=' || c == ',') {
      return absl::InvalidArgumentError(absl::StrCat(
          "value of label ", Quote(key), " ", Quote(value),
          " may contain only printable ASCII other than '=' and ','"));
    }
  }
  return absl::OkStatus();
}

std::string HostPlatform() {
#if defined(__linux__)
  constexpr absl::string_view kOs = "linux";
#elif defined(__APPLE__)
  constexpr absl::string_view kOs = "darwin";
#elif defined(_WIN32)
  constexpr absl::string_view kOs = "windows";
#else
#error "unsupported operating system"
#endif
#if defined(__x86_64__) || defined(_M_X64)
  constexpr absl::string_view kArch = "amd64";
#elif defined(__aarch64__) || defined(_M_ARM64)
  constexpr absl::string_view kArch = "arm64";
#elif defined(__arm__) || defined(_M_ARM)
  constexpr absl::string_view kArch = "arm";
#elif defined(__i386__) || defined(_M_IX86)
  constexpr absl::string_view kArch = "386";
#elif defined(__riscv) && __riscv_xlen == 64
  constexpr absl::string_view kArch = "riscv64";
#else
#error "unsupported architecture"
#endif
  return absl::StrCat(kOs, "/", kArch);
}

}  // namespace fleet
