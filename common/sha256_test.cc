#include "common/sha256.h"

#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include <string>

#include "gtest/gtest.h"

namespace fleet {
namespace {

struct Vector {
  std::string input;
  std::string hex;
};

// FIPS 180-2 / NIST CSRC example vectors.
std::vector<Vector> NistVectors() {
  return {
      {"", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
      {"abc",
       "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
      {"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
       "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"},
      {std::string(1000000, 'a'),
       "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"},
  };
}

TEST(Sha256Test, MatchesNistVectors) {
  for (const Vector& v : NistVectors()) {
    EXPECT_EQ(DigestToHex(Sha256Of(v.input)), v.hex)
        << "input of " << v.input.size() << " bytes";
  }
}

TEST(Sha256Test, StreamingInPiecesEqualsOneShot) {
  std::string data;
  for (int i = 0; i < 100000; ++i) data.push_back(static_cast<char>(i * 7));
  const Digest expected = Sha256Of(data);
  for (size_t piece : {1u, 3u, 63u, 64u, 65u, 4096u, 99999u}) {
    Sha256 hasher;
    for (size_t off = 0; off < data.size(); off += piece) {
      hasher.Update(absl::string_view(data).substr(off, piece));
    }
    EXPECT_EQ(hasher.Finish(), expected) << "piece size " << piece;
  }
}

TEST(Sha256Test, ResetStartsOver) {
  Sha256 hasher;
  hasher.Update("garbage");
  hasher.Finish();
  hasher.Reset();
  hasher.Update("ab");
  hasher.Update(static_cast<const void*>("c"), 1);
  EXPECT_EQ(DigestToHex(hasher.Finish()),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

TEST(Sha256Test, HexRoundTripsAndAcceptsUpperCase) {
  const Digest d = Sha256Of("abc");
  const std::string hex = DigestToHex(d);
  ASSERT_EQ(hex.size(), 64u);
  absl::StatusOr<Digest> parsed = DigestFromHex(hex);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(*parsed, d);

  std::string upper = hex;
  for (char& c : upper) c = static_cast<char>(toupper(c));
  parsed = DigestFromHex(upper);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(*parsed, d);
}

TEST(Sha256Test, RejectsBadHex) {
  const std::string good = DigestToHex(Sha256Of("abc"));
  const std::string bad_inputs[] = {
      "",
      good.substr(0, 63),
      good + "0",
      "g" + good.substr(1),
      good.substr(0, 63) + " ",
      std::string("\0", 1) + good.substr(1),
  };
  for (const std::string& bad : bad_inputs) {
    absl::StatusOr<Digest> parsed = DigestFromHex(bad);
    EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument)
        << "input \"" << bad << "\"";
  }
}

TEST(Sha256Test, BytesRoundTripAndWrongLengthRejected) {
  const Digest d = Sha256Of("abc");
  const std::string bytes = DigestToBytes(d);
  ASSERT_EQ(bytes.size(), 32u);
  absl::StatusOr<Digest> parsed = DigestFromBytes(bytes);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(*parsed, d);
  EXPECT_EQ(DigestFromBytes(bytes.substr(1)).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(DigestFromBytes(bytes + "x").status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(Sha256Test, FileDigestMatchesContentAcrossChunkBoundaries) {
  std::string dir = testing::TempDir();
  std::string path = dir + "/sha256_file_test.bin";
  // Larger than one 1 MiB read so more than one chunk is hashed.
  std::string data(3 * (1 << 20) + 17, '\0');
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<char>(i % 251);
  int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(write(fd, data.data(), data.size()),
            static_cast<ssize_t>(data.size()));
  close(fd);

  absl::StatusOr<Digest> d = Sha256OfFile(path);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(*d, Sha256Of(data));
  unlink(path.c_str());
}

TEST(Sha256Test, MissingFileIsNotFound) {
  absl::StatusOr<Digest> d =
      Sha256OfFile(testing::TempDir() + "/does-not-exist");
  EXPECT_EQ(d.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(d.status().message().find("does-not-exist"),
            absl::string_view::npos);
}

}  // namespace
}  // namespace fleet
