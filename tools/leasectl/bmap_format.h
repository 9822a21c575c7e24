// The two outputs of `leasectl bmap`: text in the manner of `xfs_bmap -v`
// and JSON. docs/leasectl.md specifies both, with an example.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "leasefs/ioctl.h"

namespace leasefs::leasectl {

// A file's block map as LEASEFS_IOC_BMAP reported it.
struct BlockMap {
  std::string file;  // as named on the command line
  uint64_t size = 0;
  uint32_t block_size = 0;
  std::vector<leasefs_extent> extents;  // in file order, not overlapping
};

// LEASEFS_EXTENT_* bits as words, lowest bit first ("unwritten", "shared",
// "quarantined"); unknown bits as "0x8" and so on.
std::vector<std::string> FlagNames(uint32_t flags);

// The text: a title line, a column header, then one numbered line per run
// and per hole (between runs, and from the last run to the end of file
// rounded up to a block). A map with neither: the title and " no extents".
// REQUIRES: map.block_size > 0
std::string FormatBlockMap(const BlockMap& map);

// {"file", "size", "block_size", "extents": [{"file_offset", "length",
// "pool_offset", "pool_block", "blocks", "refcount", "flags": [...]}]}.
// Keys in that order. Holes are not listed. REQUIRES: map.block_size > 0
nlohmann::ordered_json BlockMapJson(const BlockMap& map);

}  // namespace leasefs::leasectl
