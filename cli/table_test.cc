#include "cli/table.h"

#include <sstream>

#include "gtest/gtest.h"

namespace fleet::cli {
namespace {

std::string Render(const Table& table) {
  std::ostringstream out;
  table.Print(out);
  return out.str();
}

TEST(TableTest, SizesEachColumnToItsWidestCell) {
  Table table({{"PRODUCT"}, {"VERSION"}, {"PLATFORM"}});
  table.AddRow({"web", "1.2.0", "linux/amd64"});
  table.AddRow({"billing-api", "10.0.0-rc.1", "linux/arm64"});
  EXPECT_EQ(Render(table),
            "PRODUCT       VERSION       PLATFORM\n"
            "web           1.2.0         linux/amd64\n"
            "billing-api   10.0.0-rc.1   linux/arm64\n");
}

TEST(TableTest, RightAlignedColumnPadsOnTheLeft) {
  Table table({{"NAME"}, {"SIZE", Table::Align::kRight}, {"AGE"}});
  table.AddRow({"a", "12.3 MiB", "3m ago"});
  table.AddRow({"bb", "512 B", "just now"});
  EXPECT_EQ(Render(table),
            "NAME       SIZE   AGE\n"
            "a      12.3 MiB   3m ago\n"
            "bb        512 B   just now\n");
}

TEST(TableTest, LinesHaveNoTrailingSpaces) {
  Table table({{"AGENT"}, {"ERROR"}});
  table.AddRow({"a-very-long-agent-id", ""});
  table.AddRow({"b", "verify: bad signature"});
  std::istringstream lines(Render(table));
  std::string line;
  int count = 0;
  while (std::getline(lines, line)) {
    ++count;
    ASSERT_FALSE(line.empty());
    EXPECT_NE(line.back(), ' ') << "line: \"" << line << "\"";
  }
  EXPECT_EQ(count, 3);
}

TEST(TableTest, AlignsUtf8TextByCodePoints) {
  Table table({{"FROM → TO"}, {"STATE"}});
  table.AddRow({"1.1.0 → 1.2.0", "healthy"});
  table.AddRow({"-", "pending"});
  EXPECT_EQ(Render(table),
            "FROM → TO       STATE\n"
            "1.1.0 → 1.2.0   healthy\n"
            "-               pending\n");
}

TEST(TableTest, PrintsOnlyTheHeaderWithoutRows) {
  Table table({{"A"}, {"B"}});
  EXPECT_EQ(table.rows(), 0u);
  EXPECT_EQ(Render(table), "A   B\n");
}

TEST(TableTest, DisplayWidthCountsCodePoints) {
  EXPECT_EQ(DisplayWidth(""), 0u);
  EXPECT_EQ(DisplayWidth("abc"), 3u);
  EXPECT_EQ(DisplayWidth("→"), 1u);
  EXPECT_EQ(DisplayWidth("é→x"), 3u);
}

TEST(TableTest, DisplayWidthSkipsColourCodes) {
  EXPECT_EQ(DisplayWidth("\x1b[32mok\x1b[0m"), 2u);
  EXPECT_EQ(DisplayWidth("\x1b[1;31mFAIL\x1b[0m →"), 6u);
}

TEST(TableTest, ColouredCellsLineUpLikePlainOnes) {
  Table table({{"STATE"}, {"AGENTS", Table::Align::kRight}});
  table.AddRow({"\x1b[32mrunning\x1b[0m", "3"});
  table.AddRow({"paused", "12"});
  EXPECT_EQ(Render(table),
            "STATE     AGENTS\n"
            "\x1b[32mrunning\x1b[0m        3\n"
            "paused        12\n");
}

TEST(PrintFieldsTest, AlignsValuesAfterTheLongestKey) {
  std::ostringstream out;
  PrintFields({{"ROLLOUT", "ro-1"}, {"STATE", "running"}, {"EMPTY", ""}}, out);
  EXPECT_EQ(out.str(),
            "ROLLOUT   ro-1\n"
            "STATE     running\n"
            "EMPTY\n");
}

}  // namespace
}  // namespace fleet::cli
