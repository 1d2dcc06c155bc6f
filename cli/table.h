// Aligned text tables for fleetctl's human output, kubectl style:
//
//   Table table({{"PRODUCT"}, {"VERSION"}, {"SIZE", Table::Align::kRight}});
//   table.AddRow({"web", "1.2.0", "12.3 MiB"});
//   table.Print(std::cout);
//
// prints
//
//   PRODUCT   VERSION       SIZE
//   web       1.2.0     12.3 MiB
//
// Columns are separated by three spaces and sized to their widest cell,
// measured in code points so UTF-8 text ("1.1.0 → 1.2.0") lines up, and
// without colour codes so coloured cells line up too. Lines carry no
// trailing spaces.
#ifndef FLEET_CLI_TABLE_H_
#define FLEET_CLI_TABLE_H_

#include <cstddef>
#include <ostream>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/string_view.h"

namespace fleet::cli {

class Table {
 public:
  enum class Align { kLeft, kRight };
  struct Column {
    std::string header;
    Align align = Align::kLeft;
  };

  explicit Table(std::vector<Column> columns);

  // REQUIRES: cells.size() == number of columns.
  void AddRow(std::vector<std::string> cells);
  size_t rows() const { return rows_.size(); }

  // Writes the header row, then every row in insertion order.
  void Print(std::ostream& out) const;

 private:
  std::vector<Column> columns_;
  std::vector<std::vector<std::string>> rows_;
};

// Prints one "KEY   value" line per field, values aligned three spaces after
// the longest key: the header block of a detail view.
void PrintFields(const std::vector<std::pair<std::string, std::string>>& fields,
                 std::ostream& out);

// Number of terminal columns `text` takes: one per UTF-8 code point; ANSI
// escape sequences (colours) take none.
size_t DisplayWidth(absl::string_view text);

}  // namespace fleet::cli

#endif  // FLEET_CLI_TABLE_H_
