// Internal: what a range of a file's blocks holds, in file order, as the
// write, fallocate and DAX paths plan their changes from it. Only the
// engine's own .cc files include this.
#pragma once

#include <cstdint>
#include <vector>

#include "engine/extent_map.h"
#include "engine/pool.h"

namespace leasefs::engine {

// A run of file blocks that are all holes, all unwritten, all written, or
// (after SplitShared) all written and shared by reflink.
struct FileRun {
  enum Kind { kHole, kUnwritten, kWritten, kShared };
  uint64_t file_block;
  uint64_t length;
  Kind kind;
  uint64_t pool_block;  // for every kind but kHole (0 there)
  // Holes need new blocks to be written, and so do shared blocks (copied
  // on write).
  bool NeedsBlocks() const { return kind == kHole || kind == kShared; }
};

// The runs of file blocks [first, first + count) of `em`, clipped to the
// range; written extents are kWritten whether shared or not.
std::vector<FileRun> Survey(const ExtentMap& em, uint64_t first, uint64_t count);

// `runs` with every kWritten run split into the parts whose blocks are
// shared (refcount > 1, kShared) and the parts that are not.
std::vector<FileRun> SplitShared(const PoolView& pool, const std::vector<FileRun>& runs);

// Pool block right after the mapping that precedes `file_block` (0 if none):
// where an allocation for it should start so that the file stays contiguous.
uint64_t GoalFor(const ExtentMap& em, uint64_t file_block);

}  // namespace leasefs::engine
