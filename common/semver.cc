#include "common/semver.h"

#include <algorithm>
#include <limits>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"

namespace fleet {
namespace {

constexpr size_t kMaxLength = 128;

bool IsDigit(char c) { return c >= '0' && c <= '9'; }

bool IsIdentifierChar(char c) {
  return IsDigit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
         c == '-';
}

bool AllDigits(absl::string_view s) {
  for (char c : s) {
    if (!IsDigit(c)) return false;
  }
  return true;
}

absl::Status BadVersion(absl::string_view text, absl::string_view why) {
  return absl::InvalidArgumentError(
      absl::StrCat("invalid version \"", absl::CHexEscape(text), "\": ", why));
}

// Parses one of MAJOR, MINOR, PATCH: digits, no leading zero, fits 64 bits.
absl::StatusOr<uint64_t> ParseNumber(absl::string_view text,
                                     absl::string_view part,
                                     absl::string_view name) {
  if (part.empty()) return BadVersion(text, absl::StrCat(name, " is empty"));
  if (!AllDigits(part)) {
    return BadVersion(text, absl::StrCat(name, " \"", absl::CHexEscape(part),
                                         "\" is not a number"));
  }
  if (part.size() > 1 && part[0] == '0') {
    return BadVersion(text,
                      absl::StrCat(name, " \"", part, "\" has a leading zero"));
  }
  uint64_t value = 0;
  for (char c : part) {
    uint64_t digit = static_cast<uint64_t>(c - '0');
    if (value > (std::numeric_limits<uint64_t>::max() - digit) / 10) {
      return BadVersion(text,
                        absl::StrCat(name, " \"", part, "\" is too large"));
    }
    value = value * 10 + digit;
  }
  return value;
}

absl::Status CheckIdentifiers(absl::string_view text,
                              const std::vector<absl::string_view>& ids,
                              absl::string_view what, bool numeric_rules) {
  for (absl::string_view id : ids) {
    if (id.empty()) {
      return BadVersion(text, absl::StrCat(what, " has an empty identifier"));
    }
    for (char c : id) {
      if (!IsIdentifierChar(c)) {
        return BadVersion(
            text, absl::StrCat(what, " identifier \"", absl::CHexEscape(id),
                               "\" has a character outside [0-9A-Za-z-]"));
      }
    }
    if (numeric_rules && id.size() > 1 && id[0] == '0' && AllDigits(id)) {
      return BadVersion(text, absl::StrCat(what, " identifier \"", id,
                                           "\" has a leading zero"));
    }
  }
  return absl::OkStatus();
}

// Section 11.4: numeric identifiers compare numerically and sort below
// alphanumeric ones; alphanumeric ones compare in ASCII order.
std::strong_ordering CompareIdentifier(const std::string& a,
                                       const std::string& b) {
  bool a_num = AllDigits(a);
  bool b_num = AllDigits(b);
  if (a_num && b_num) {
    // No leading zeros, so a longer number is larger; equal lengths compare
    // lexically. This also handles values beyond 64 bits.
    if (a.size() != b.size()) return a.size() <=> b.size();
    int c = a.compare(b);
    return c <=> 0;
  }
  if (a_num) return std::strong_ordering::less;
  if (b_num) return std::strong_ordering::greater;
  int c = a.compare(b);
  return c <=> 0;
}

}  // namespace

absl::StatusOr<SemVer> SemVer::Parse(absl::string_view text) {
  if (text.empty()) return BadVersion(text, "empty");
  if (text.size() > kMaxLength) {
    return BadVersion(text, absl::StrCat("longer than ", kMaxLength, " bytes"));
  }
  if (text[0] == 'v' || text[0] == 'V') {
    return BadVersion(text, "must not start with \"v\"");
  }

  absl::string_view rest = text;
  std::string build;
  size_t plus = rest.find('+');
  if (plus != absl::string_view::npos) {
    absl::string_view build_part = rest.substr(plus + 1);
    if (build_part.empty()) return BadVersion(text, "build metadata is empty");
    std::vector<absl::string_view> ids = absl::StrSplit(build_part, '.');
    absl::Status s = CheckIdentifiers(text, ids, "build metadata", false);
    if (!s.ok()) return s;
    build = std::string(build_part);
    rest = rest.substr(0, plus);
  }

  std::vector<std::string> prerelease;
  size_t dash = rest.find('-');
  if (dash != absl::string_view::npos) {
    absl::string_view pre_part = rest.substr(dash + 1);
    if (pre_part.empty()) return BadVersion(text, "pre-release is empty");
    std::vector<absl::string_view> ids = absl::StrSplit(pre_part, '.');
    absl::Status s = CheckIdentifiers(text, ids, "pre-release", true);
    if (!s.ok()) return s;
    for (absl::string_view id : ids) prerelease.emplace_back(id);
    rest = rest.substr(0, dash);
  }

  std::vector<absl::string_view> core = absl::StrSplit(rest, '.');
  if (core.size() != 3) {
    return BadVersion(text, "expected MAJOR.MINOR.PATCH");
  }
  SemVer v;
  absl::StatusOr<uint64_t> n = ParseNumber(text, core[0], "major");
  if (!n.ok()) return n.status();
  v.major_ = *n;
  n = ParseNumber(text, core[1], "minor");
  if (!n.ok()) return n.status();
  v.minor_ = *n;
  n = ParseNumber(text, core[2], "patch");
  if (!n.ok()) return n.status();
  v.patch_ = *n;
  v.prerelease_ = std::move(prerelease);
  v.build_ = std::move(build);
  return v;
}

std::string SemVer::ToString() const {
  std::string out = absl::StrCat(major_, ".", minor_, ".", patch_);
  if (!prerelease_.empty()) {
    absl::StrAppend(&out, "-", absl::StrJoin(prerelease_, "."));
  }
  if (!build_.empty()) absl::StrAppend(&out, "+", build_);
  return out;
}

std::strong_ordering SemVer::operator<=>(const SemVer& other) const {
  if (auto c = major_ <=> other.major_; c != 0) return c;
  if (auto c = minor_ <=> other.minor_; c != 0) return c;
  if (auto c = patch_ <=> other.patch_; c != 0) return c;
  // A version without pre-release ranks above any with one (11.3).
  if (prerelease_.empty() && other.prerelease_.empty()) {
    return std::strong_ordering::equal;
  }
  if (prerelease_.empty()) return std::strong_ordering::greater;
  if (other.prerelease_.empty()) return std::strong_ordering::less;
  size_t n = std::min(prerelease_.size(), other.prerelease_.size());
  for (size_t i = 0; i < n; ++i) {
    if (auto c = CompareIdentifier(prerelease_[i], other.prerelease_[i]);
        c != 0) {
      return c;
    }
  }
  return prerelease_.size() <=> other.prerelease_.size();
}

int CompareVersions(absl::string_view a, absl::string_view b) {
  absl::StatusOr<SemVer> va = SemVer::Parse(a);
  absl::StatusOr<SemVer> vb = SemVer::Parse(b);
  std::strong_ordering c = std::strong_ordering::equal;
  if (va.ok() && vb.ok()) {
    c = *va <=> *vb;
  } else if (va.ok()) {
    c = std::strong_ordering::greater;
  } else if (vb.ok()) {
    c = std::strong_ordering::less;
  } else {
    c = a.compare(b) <=> 0;
  }
  return c < 0 ? -1 : (c > 0 ? 1 : 0);
}

}  // namespace fleet
