// BlockAllocator: the in-memory index of free data blocks.
//
// The persistent truth is the refcount table (0 = free); the allocator is
// rebuilt from it at mount and kept in step by the engine: blocks leave it
// when an operation reserves them (before its transaction commits) and come
// back only after the transaction that frees them has committed, so a block
// is never owned twice, even across a crash.
//
// Thread safety: none; the engine calls it under its writer lock.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <set>
#include <utility>
#include <vector>

namespace leasefs::engine {

// A run of pool blocks.
struct BlockRange {
  uint64_t start = 0;
  uint64_t count = 0;
  uint64_t end() const { return start + count; }
  bool operator==(const BlockRange&) const = default;
};

class BlockAllocator {
 public:
  // Builds the free index of pool blocks [first, first + count) from their
  // refcounts (refcounts[i] describes block first + i), of which only the
  // first `known` are read: the blocks after them are free (a pool's
  // refcount table is initialized only up to its mark). Reads `known`
  // refcounts and makes one run of the free blocks after them.
  void Init(uint64_t first, uint64_t count, const uint32_t* refcounts, uint64_t known);

  // Takes up to `count` blocks, appending the runs to *out in the order they
  // should be mapped. Prefers a run starting at `goal` (so files grow
  // contiguously), then the smallest free run that holds everything (the
  // lowest of equal ones), then the largest runs. Returns how many blocks
  // were taken: fewer than `count` only when free space ran out. Best fit
  // keeps allocations low: the run that reaches the end of the area is the
  // largest, so it is cut only when no hole below holds the request, and
  // then from its start; the pool's refcount mark follows the highest block
  // in use.
  uint64_t Allocate(uint64_t count, uint64_t goal, std::vector<BlockRange>* out);
  // Returns blocks to the free index. REQUIRES: they are not free already.
  void Free(BlockRange r);

  uint64_t free_blocks() const noexcept { return free_; }
  uint64_t first_block() const noexcept { return first_; }
  uint64_t block_count() const noexcept { return count_; }
  // Number of free runs (fragmentation, for tests and reports).
  size_t free_runs() const noexcept { return by_start_.size(); }
  // True if every block of `r` is free.
  bool IsFree(BlockRange r) const;

 private:
  void Insert(uint64_t start, uint64_t count);
  void Erase(std::map<uint64_t, uint64_t>::iterator it);
  // Takes [start, start + n) out of the free run `it`, which contains it.
  void Carve(std::map<uint64_t, uint64_t>::iterator it, uint64_t start, uint64_t n);

  uint64_t first_ = 0;
  uint64_t count_ = 0;
  uint64_t free_ = 0;
  std::map<uint64_t, uint64_t> by_start_;            // start -> length
  std::set<std::pair<uint64_t, uint64_t>> by_size_;  // (length, start)
};

}  // namespace leasefs::engine
