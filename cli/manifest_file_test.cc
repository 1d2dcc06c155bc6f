#include "cli/manifest_file.h"

#include <string>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "common/ed25519.h"
#include "common/manifest.h"
#include "common/sha256.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace fleet::cli {
namespace {

ManifestFile Prepared() {
  ManifestFile file;
  file.release.set_product("web");
  file.release.set_version("1.2.0");
  file.release.set_platform("linux/arm64");
  file.release.set_sha256(DigestToBytes(Sha256Of("artifact")));
  file.release.set_size(8);
  file.release.set_created_unix_seconds(1'800'000'000);
  file.release.set_expires_unix_seconds(1'800'086'400);
  file.release.set_allows_downgrade(true);
  EXPECT_TRUE(
      file.release.SerializeToString(file.signed_manifest.mutable_manifest()));
  return file;
}

// The rendered file with `mutate` applied to its JSON document.
template <typename F>
std::string Edited(const ManifestFile& file, F mutate) {
  nlohmann::json doc = nlohmann::json::parse(RenderManifestFile(file));
  mutate(doc);
  return doc.dump(2);
}

TEST(ManifestFileTest, RoundTripsBytesSignaturesAndReviewFields) {
  ManifestFile file = Prepared();
  const Ed25519PrivateKey key = *Ed25519PrivateKey::Generate();
  AddSignature(file.signed_manifest, key);
  const std::string text = RenderManifestFile(file);

  // Humans read the fields in the signed order, times in UTC.
  EXPECT_LT(text.find("\"product\""), text.find("\"version\""));
  EXPECT_TRUE(absl::StrContains(text, "\"created\": \"2027-01-15T08:00:00Z\""))
      << text;
  EXPECT_TRUE(absl::StrContains(text, "\"allows_downgrade\": true"));
  EXPECT_TRUE(absl::StrContains(text, DigestToHex(Sha256Of("artifact"))));

  absl::StatusOr<ManifestFile> loaded = ParseManifestFile(text, "m.json");
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->signed_manifest.manifest(),
            file.signed_manifest.manifest());
  ASSERT_EQ(loaded->signed_manifest.signatures_size(), 1);
  EXPECT_EQ(loaded->signed_manifest.signatures(0).key_id(),
            key.PublicKey().KeyId());
  TrustedKeys keys;
  keys.Add(key.PublicKey());
  EXPECT_TRUE(VerifyManifest(loaded->signed_manifest, keys,
                             absl::FromUnixSeconds(1'800'000'100))
                  .ok());
  EXPECT_EQ(RenderManifestFile(*loaded), text);
}

TEST(ManifestFileTest, EditedReviewFieldsAreRefusedNamingTheField) {
  const ManifestFile file = Prepared();
  struct Case {
    const char* field;
    nlohmann::json value;
  };
  const Case cases[] = {
      {"product", "api"},
      {"version", "1.3.0"},
      {"platform", "linux/amd64"},
      {"sha256", DigestToHex(Sha256Of("other"))},
      {"size", 9},
      {"created", "2027-01-15T08:00:01Z"},
      {"expires", "never"},
      {"allows_downgrade", false},
  };
  for (const Case& c : cases) {
    const std::string text = Edited(
        file, [&](nlohmann::json& doc) { doc["release"][c.field] = c.value; });
    absl::StatusOr<ManifestFile> loaded = ParseManifestFile(text, "m.json");
    EXPECT_EQ(loaded.status().code(), absl::StatusCode::kFailedPrecondition)
        << c.field;
    EXPECT_TRUE(absl::StrContains(
        loaded.status().message(),
        absl::StrCat("review field \"", c.field, "\" says ", c.value.dump())))
        << loaded.status();
  }
  // A field the bytes do not carry, or one removed from the review.
  EXPECT_EQ(ParseManifestFile(Edited(file,
                                     [](nlohmann::json& doc) {
                                       doc["release"]["mirror"] = "http://x";
                                     }),
                              "m.json")
                .status()
                .code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(ParseManifestFile(Edited(file,
                                     [](nlohmann::json& doc) {
                                       doc["release"].erase("expires");
                                     }),
                              "m.json")
                .status()
                .code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST(ManifestFileTest, MalformedFilesAreInvalidArguments) {
  const ManifestFile file = Prepared();
  const std::string bytes_with_unknown_field =
      file.signed_manifest.manifest() + std::string("\x78\x01", 2);
  const std::pair<std::string, std::string> cases[] = {
      {"not json", "{"},
      {"another kind",
       Edited(file, [](nlohmann::json& d) { d["kind"] = "x"; })},
      {"kind not a string",
       Edited(file, [](nlohmann::json& d) { d["kind"] = 1; })},
      {"newer format",
       Edited(file, [](nlohmann::json& d) { d["format_version"] = 2; })},
      {"unknown field",
       Edited(file, [](nlohmann::json& d) { d["extra"] = true; })},
      {"missing signatures",
       Edited(file, [](nlohmann::json& d) { d.erase("signatures"); })},
      {"bad base64",
       Edited(file, [](nlohmann::json& d) { d["manifest"] = "!!"; })},
      {"not a manifest", Edited(file,
                                [](nlohmann::json& d) {
                                  d["manifest"] =
                                      absl::Base64Escape("\xff\xff\xff");
                                })},
      {"hidden field", Edited(file,
                              [&](nlohmann::json& d) {
                                d["manifest"] = absl::Base64Escape(
                                    bytes_with_unknown_field);
                              })},
      {"signature entry", Edited(file,
                                 [](nlohmann::json& d) {
                                   d["signatures"] = {{{"key_id", "ab"}}};
                                 })},
  };
  for (const auto& [name, text] : cases) {
    absl::StatusOr<ManifestFile> loaded = ParseManifestFile(text, "m.json");
    EXPECT_EQ(loaded.status().code(), absl::StatusCode::kInvalidArgument)
        << name << ": " << loaded.status();
    EXPECT_TRUE(absl::StrContains(loaded.status().message(), "m.json")) << name;
  }
}

TEST(ManifestFileTest, ExpiryAndTimes) {
  ManifestFile file = Prepared();
  EXPECT_FALSE(
      ManifestExpired(file.release, absl::FromUnixSeconds(1'800'086'400)));
  EXPECT_TRUE(
      ManifestExpired(file.release, absl::FromUnixSeconds(1'800'086'401)));
  file.release.set_expires_unix_seconds(0);
  EXPECT_FALSE(ManifestExpired(file.release, absl::InfiniteFuture()));
  EXPECT_EQ(ManifestTime(0), "never");
  EXPECT_TRUE(absl::StrContains(
      DescribeRelease(file.release, absl::FromUnixSeconds(1'800'000'000)),
      "expires    never"));
}

}  // namespace
}  // namespace fleet::cli
