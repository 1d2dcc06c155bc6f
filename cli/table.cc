#include "cli/table.h"

#include <algorithm>
#include <cassert>
#include <utility>

namespace fleet::cli {

namespace {

constexpr absl::string_view kGap = "   ";

void WritePadding(std::ostream& out, size_t n) {
  for (size_t i = 0; i < n; ++i) out << ' ';
}

}  // namespace

size_t DisplayWidth(absl::string_view text) {
  size_t width = 0;
  for (size_t i = 0; i < text.size(); ++i) {
    // ANSI colour codes (CommandContext::Paint: ESC [ params m) take no
    // columns: skip to the final byte of the sequence.
    if (text[i] == '\x1b' && i + 1 < text.size() && text[i + 1] == '[') {
      i += 2;
      while (i < text.size() && !(text[i] >= '@' && text[i] <= '~')) ++i;
      continue;
    }
    // Count every byte except UTF-8 continuation bytes (10xxxxxx).
    if ((static_cast<unsigned char>(text[i]) & 0xC0) != 0x80) ++width;
  }
  return width;
}

Table::Table(std::vector<Column> columns) : columns_(std::move(columns)) {}

void Table::AddRow(std::vector<std::string> cells) {
  assert(cells.size() == columns_.size());
  cells.resize(columns_.size());
  rows_.push_back(std::move(cells));
}

void Table::Print(std::ostream& out) const {
  std::vector<size_t> widths(columns_.size());
  for (size_t c = 0; c < columns_.size(); ++c) {
    widths[c] = DisplayWidth(columns_[c].header);
    for (const auto& row : rows_) {
      widths[c] = std::max(widths[c], DisplayWidth(row[c]));
    }
  }

  auto print_line = [&](auto cell_at) {
    // The last non-empty left-aligned cell ends the line: no trailing pad.
    size_t last = columns_.size();
    while (last > 0 && columns_[last - 1].align == Align::kLeft &&
           cell_at(last - 1).empty()) {
      --last;
    }
    for (size_t c = 0; c < last; ++c) {
      const std::string& cell = cell_at(c);
      size_t pad = widths[c] - DisplayWidth(cell);
      if (c > 0) out << kGap;
      if (columns_[c].align == Align::kRight) {
        WritePadding(out, pad);
        out << cell;
      } else {
        out << cell;
        if (c + 1 < last) WritePadding(out, pad);
      }
    }
    out << '\n';
  };

  print_line(
      [&](size_t c) -> const std::string& { return columns_[c].header; });
  for (const auto& row : rows_) {
    print_line([&](size_t c) -> const std::string& { return row[c]; });
  }
}

void PrintFields(const std::vector<std::pair<std::string, std::string>>& fields,
                 std::ostream& out) {
  size_t width = 0;
  for (const auto& [key, value] : fields) {
    width = std::max(width, DisplayWidth(key));
  }
  for (const auto& [key, value] : fields) {
    out << key;
    if (!value.empty()) {
      WritePadding(out, width - DisplayWidth(key));
      out << kGap << value;
    }
    out << '\n';
  }
}

}  // namespace fleet::cli
