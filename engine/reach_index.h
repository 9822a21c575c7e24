// ReachIndex: the in-memory view of the pool's reach records (the quarantine
// table, docs/pool_format.md "Quarantine"): which pool blocks some record
// covers, and which of those only the quarantine holds.
//
// The table itself is the persistent truth; this index is rebuilt from it at
// mount and kept in step by the engine under its writer lock.
//
// Thread safety: none (the engine's lock protects it).
#pragma once

#include <cstdint>
#include <map>
#include <vector>

#include "engine/allocator.h"

namespace leasefs::engine {

// How many ranges cover each block, as a step function: O(log n) to ask about
// a block, whatever the lengths of the ranges.
class Coverage {
 public:
  void Add(BlockRange r) { Change(r, +1); }
  // REQUIRES: r was added (and not removed since).
  void Remove(BlockRange r) { Change(r, -1); }
  bool Covers(uint64_t block) const;
  // The parts of `r` that at least one range covers, in block order.
  std::vector<BlockRange> CoveredParts(BlockRange r) const;
  // The parts of `r` that no range covers, in block order.
  std::vector<BlockRange> UncoveredParts(BlockRange r) const;
  // Calls f(part, covered) for every part of `r`, in block order: each part
  // is wholly covered or wholly uncovered, and the two alternate.
  template <typename F>
  void ForEachPart(BlockRange r, F&& f) const {
    uint64_t at = r.start;
    for (const BlockRange& c : CoveredParts(r)) {
      if (c.start > at) f(BlockRange{at, c.start - at}, false);
      f(c, true);
      at = c.end();
    }
    if (at < r.end()) f(BlockRange{at, r.end() - at}, false);
  }
  // True if any block of `r` is covered.
  bool CoversAny(BlockRange r) const { return !CoveredParts(r).empty(); }
  bool empty() const noexcept { return level_.empty(); }

 private:
  void Change(BlockRange r, int delta);
  // Makes `at` a boundary of the step function.
  void Split(uint64_t at);
  // level_: from each key to the next, that many ranges cover the blocks.
  // The last key's level is 0; no two neighbours have the same level.
  std::map<uint64_t, uint32_t> level_;
};

// A set of blocks kept as disjoint, non-adjacent runs.
class BlockSet {
 public:
  // REQUIRES: no block of r is in the set.
  void Insert(BlockRange r);
  // Removes whatever of r is in the set.
  void Erase(BlockRange r);
  // The parts of r in the set, in block order.
  std::vector<BlockRange> Parts(BlockRange r) const;
  uint64_t CountIn(BlockRange r) const;
  bool Contains(uint64_t block) const;
  uint64_t size() const noexcept { return blocks_; }
  // The lowest block in the set. REQUIRES: size() > 0.
  uint64_t first() const { return runs_.begin()->first; }

 private:
  std::map<uint64_t, uint64_t> runs_;  // start -> end
  uint64_t blocks_ = 0;
};

}  // namespace leasefs::engine
