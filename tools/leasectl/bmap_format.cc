#include "tools/leasectl/bmap_format.h"

#include <algorithm>
#include <array>

#include <fmt/format.h>

namespace leasefs::leasectl {

namespace {

constexpr uint64_t kSector = 512;

uint64_t DivRoundUp(uint64_t a, uint64_t b) { return a / b + (a % b != 0); }

// One line of the table; cells in the order of kColumns.
using Row = std::array<std::string, 7>;

struct Column {
  const char* title;
  bool right_aligned;
};
constexpr std::array<Column, 7> kColumns = {{
    {"EXT:", true},
    {"FILE-OFFSET", false},  // 512-byte sectors, [first..last] as xfs_bmap
    {"BYTES", false},        // first..last
    {"POOL-BLOCKS", false},  // first..last, or "hole"
    {"BLOCKS", true},
    {"REFS", true},
    {"FLAGS", false},
}};

// The cells both runs and holes have: number and file ranges.
Row RangeCells(size_t n, uint64_t offset, uint64_t length, uint32_t block_size) {
  const uint64_t end = offset + length;
  Row r;
  r[0] = fmt::format("{}:", n);
  r[1] = fmt::format("[{}..{}]", offset / kSector, DivRoundUp(end, kSector) - 1);
  r[2] = fmt::format("{}..{}", offset, end - 1);
  r[4] = fmt::format("{}", DivRoundUp(length, block_size));
  return r;
}

Row RunRow(size_t n, const leasefs_extent& e, uint32_t block_size) {
  Row r = RangeCells(n, e.file_offset, e.length, block_size);
  const uint64_t first = e.pool_offset / block_size;
  r[3] = fmt::format("{}..{}", first, first + DivRoundUp(e.length, block_size) - 1);
  r[5] = fmt::format("{}", e.refcount);
  const std::vector<std::string> names = FlagNames(e.flags);
  r[6] = names.empty() ? "-" : fmt::format("{}", fmt::join(names, ","));
  return r;
}

Row HoleRow(size_t n, uint64_t offset, uint64_t length, uint32_t block_size) {
  Row r = RangeCells(n, offset, length, block_size);
  r[3] = "hole";
  return r;
}

std::vector<Row> Rows(const BlockMap& map) {
  std::vector<Row> rows;
  uint64_t pos = 0;  // end of what the rows cover so far
  for (const leasefs_extent& e : map.extents) {
    if (e.file_offset > pos)
      rows.push_back(HoleRow(rows.size(), pos, e.file_offset - pos, map.block_size));
    rows.push_back(RunRow(rows.size(), e, map.block_size));
    pos = std::max<uint64_t>(pos, e.file_offset + e.length);
  }
  const uint64_t eof = DivRoundUp(map.size, map.block_size) * map.block_size;
  if (eof > pos) rows.push_back(HoleRow(rows.size(), pos, eof - pos, map.block_size));
  return rows;
}

void AppendLine(std::string* out, const Row& cells, const std::array<size_t, 7>& widths) {
  std::string line;
  for (size_t i = 0; i < cells.size(); ++i) {
    line += ' ';
    const std::string pad(widths[i] - cells[i].size(), ' ');
    line += kColumns[i].right_aligned ? pad + cells[i] : cells[i] + pad;
  }
  line.erase(line.find_last_not_of(' ') + 1);
  *out += line;
  *out += '\n';
}

}  // namespace

std::vector<std::string> FlagNames(uint32_t flags) {
  static constexpr std::array<std::pair<uint32_t, const char*>, 3> kNames = {{
      {LEASEFS_EXTENT_UNWRITTEN, "unwritten"},
      {LEASEFS_EXTENT_SHARED, "shared"},
      {LEASEFS_EXTENT_QUARANTINED, "quarantined"},
  }};
  std::vector<std::string> names;
  for (uint32_t bit = 1; bit != 0; bit <<= 1) {
    if ((flags & bit) == 0) continue;
    const auto* known =
        std::find_if(kNames.begin(), kNames.end(), [bit](const auto& n) { return n.first == bit; });
    names.push_back(known != kNames.end() ? known->second : fmt::format("{:#x}", bit));
  }
  return names;
}

std::string FormatBlockMap(const BlockMap& map) {
  std::string out = fmt::format("{}: size {}, block size {}\n", map.file, map.size, map.block_size);
  const std::vector<Row> rows = Rows(map);
  if (rows.empty()) return out + " no extents\n";
  Row header;
  std::array<size_t, 7> widths{};
  for (size_t i = 0; i < kColumns.size(); ++i) {
    header[i] = kColumns[i].title;
    widths[i] = header[i].size();
  }
  for (const Row& r : rows)
    for (size_t i = 0; i < r.size(); ++i) widths[i] = std::max(widths[i], r[i].size());
  AppendLine(&out, header, widths);
  for (const Row& r : rows) AppendLine(&out, r, widths);
  return out;
}

nlohmann::ordered_json BlockMapJson(const BlockMap& map) {
  nlohmann::ordered_json extents = nlohmann::ordered_json::array();
  for (const leasefs_extent& e : map.extents) {
    extents.push_back({
        {"file_offset", e.file_offset},
        {"length", e.length},
        {"pool_offset", e.pool_offset},
        {"pool_block", e.pool_offset / map.block_size},
        {"blocks", DivRoundUp(e.length, map.block_size)},
        {"refcount", e.refcount},
        {"flags", FlagNames(e.flags)},
    });
  }
  return {{"file", map.file},
          {"size", map.size},
          {"block_size", map.block_size},
          {"extents", std::move(extents)}};
}

}  // namespace leasefs::leasectl
