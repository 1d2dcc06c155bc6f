#include "common/semver.h"

#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace fleet {
namespace {

SemVer MustParse(absl::string_view text) {
  absl::StatusOr<SemVer> v = SemVer::Parse(text);
  EXPECT_TRUE(v.ok()) << text << ": " << v.status();
  return v.ok() ? *v : SemVer();
}

TEST(SemVerTest, ParsesComponents) {
  SemVer v = MustParse("1.22.333-rc.1.x-y+build.5-a");
  EXPECT_EQ(v.major(), 1u);
  EXPECT_EQ(v.minor(), 22u);
  EXPECT_EQ(v.patch(), 333u);
  EXPECT_EQ(v.prerelease(), (std::vector<std::string>{"rc", "1", "x-y"}));
  EXPECT_EQ(v.build(), "build.5-a");
  EXPECT_EQ(v.ToString(), "1.22.333-rc.1.x-y+build.5-a");
}

TEST(SemVerTest, AcceptsValidVersions) {
  const char* kValid[] = {
      "0.0.0",
      "1.0.0",
      "10.20.30",
      "1.1.2-prerelease+meta",
      "1.0.0-alpha",
      "1.0.0-alpha.beta.1",
      "1.0.0-0.3.7",
      "1.0.0-x.7.z.92",
      "1.0.0-x-y-z.--",
      "1.0.0+20130313144700",
      "1.0.0-beta+exp.sha.5114f85",
      "1.0.0+21AF26D3----117B344092BD",
      "1.0.0-0A.is.legal",
      "1.0.0+0.build.1-rc.10000aaa-kk-0.1",
      "1.0.0+001",  // leading zeros are allowed in build metadata
      "18446744073709551615.0.0",
  };
  for (const char* text : kValid) {
    absl::StatusOr<SemVer> v = SemVer::Parse(text);
    ASSERT_TRUE(v.ok()) << text << ": " << v.status();
    EXPECT_EQ(v->ToString(), text);
  }
}

TEST(SemVerTest, RejectsInvalidVersions) {
  const std::string kInvalid[] = {
      "",
      "1",
      "1.0",
      "1.2.3.4",
      "v1.0.0",
      "V1.0.0",
      "01.0.0",
      "1.01.0",
      "1.0.01",
      "1.0.0-01",
      "1.0.0-alpha.01",
      "1.0.0-",
      "1.0.0+",
      "1.0.0-+",
      "1.0.0-a..b",
      "1.0.0-a.",
      "1.0.0+a..b",
      "1.0.0+a+b",
      "1.0.0-a_b",
      "1.0.0 ",
      " 1.0.0",
      "1..0",
      "-1.0.0",
      "+1.0.0",
      "a.b.c",
      "1.0.0-\xc3\xa9",
      std::string("1.0.0\0", 6),
      "18446744073709551616.0.0",  // 2^64
      "1.99999999999999999999.0",
      "1.0.0-" + std::string(123, 'a'),  // 129 bytes
  };
  for (const std::string& text : kInvalid) {
    absl::StatusOr<SemVer> v = SemVer::Parse(text);
    EXPECT_EQ(v.status().code(), absl::StatusCode::kInvalidArgument)
        << "\"" << text << "\" parsed as " << (v.ok() ? v->ToString() : "");
  }
}

TEST(SemVerTest, ErrorNamesTheProblem) {
  EXPECT_NE(SemVer::Parse("01.0.0").status().message().find("leading zero"),
            absl::string_view::npos);
  EXPECT_NE(SemVer::Parse("v1.0.0").status().message().find("\"v\""),
            absl::string_view::npos);
  EXPECT_NE(SemVer::Parse("99999999999999999999.0.0")
                .status()
                .message()
                .find("too large"),
            absl::string_view::npos);
}

TEST(SemVerTest, OrdersBySpecPrecedence) {
  // semver.org section 11, in increasing precedence.
  const std::vector<std::string> kOrdered = {
      "1.0.0-alpha",  "1.0.0-alpha.1", "1.0.0-alpha.beta", "1.0.0-beta",
      "1.0.0-beta.2", "1.0.0-beta.11", "1.0.0-rc.1",       "1.0.0",
      "1.9.0",        "1.10.0",        "1.11.0",           "2.0.0",
      "2.1.0",        "2.1.1",
  };
  for (size_t i = 0; i < kOrdered.size(); ++i) {
    for (size_t j = 0; j < kOrdered.size(); ++j) {
      SemVer a = MustParse(kOrdered[i]);
      SemVer b = MustParse(kOrdered[j]);
      EXPECT_EQ(a < b, i < j) << kOrdered[i] << " vs " << kOrdered[j];
      EXPECT_EQ(a == b, i == j) << kOrdered[i] << " vs " << kOrdered[j];
      int expected = i < j ? -1 : (i > j ? 1 : 0);
      EXPECT_EQ(CompareVersions(kOrdered[i], kOrdered[j]), expected)
          << kOrdered[i] << " vs " << kOrdered[j];
    }
  }
}

TEST(SemVerTest, NumericIdentifiersSortBelowAlphanumericAndByValue) {
  EXPECT_LT(MustParse("1.0.0-999"), MustParse("1.0.0-a"));
  EXPECT_LT(MustParse("1.0.0-2"), MustParse("1.0.0-10"));
  EXPECT_LT(MustParse("1.0.0-Z"), MustParse("1.0.0-a"));  // ASCII order
  EXPECT_LT(MustParse("1.0.0-99999999999999999999"),
            MustParse("1.0.0-100000000000000000000"));
}

TEST(SemVerTest, BuildMetadataIsIgnoredForPrecedence) {
  EXPECT_EQ(MustParse("1.0.0+a"), MustParse("1.0.0+b"));
  EXPECT_EQ(MustParse("1.0.0-rc.1+x"), MustParse("1.0.0-rc.1"));
  EXPECT_EQ(CompareVersions("1.0.0+a", "1.0.0+b"), 0);
  EXPECT_LT(MustParse("1.0.0-rc.1+zzz"), MustParse("1.0.0+aaa"));
}

TEST(SemVerTest, CompareVersionsSortsInvalidFirstThenByBytes) {
  EXPECT_EQ(CompareVersions("junk", "0.0.1"), -1);
  EXPECT_EQ(CompareVersions("0.0.1", "junk"), 1);
  EXPECT_EQ(CompareVersions("a-junk", "b-junk"), -1);
  EXPECT_EQ(CompareVersions("b-junk", "a-junk"), 1);
  EXPECT_EQ(CompareVersions("junk", "junk"), 0);
}

}  // namespace
}  // namespace fleet
