// BlockRefs: the reference count of every data block as the checker derives
// it from the metadata (docs/pool_format.md "Block reference counts").
#pragma once

#include <cstdint>
#include <vector>

namespace leasefs::check::internal {

// Counting has two stages. While references are collected the counts are kept
// as a difference array, so adding or removing a run of any length costs O(1)
// (a pool can hold huge reflinked extents; summing block by block could be
// quadratic). Finish() turns them into per-block counts, after which single
// blocks are adjusted.
//
// Metadata blocks (extent chain, xattr and directory blocks) are also
// "claimed": a block can be claimed by one reference only, which is how a
// cyclic chain or metadata shared between inodes is caught.
//
// Memory and time follow the blocks in use, not the data area: the counts
// start out covering the first `tracked` blocks (those below the pool's
// refcount mark) and grow to cover any block referenced past them. Blocks
// past the covered ones have count 0 and are not claimed.
//
// Block numbers are pool block numbers. REQUIRES of every method taking a
// range: Contains(range).
class BlockRefs {
 public:
  BlockRefs(uint64_t data_start, uint64_t data_blocks, uint64_t tracked);

  // True if [pool_block, pool_block + length) is a non-empty range inside the
  // data area.
  bool Contains(uint64_t pool_block, uint64_t length) const noexcept;

  // Stage 1.
  void Add(uint64_t pool_block, uint64_t length);
  void Remove(uint64_t pool_block, uint64_t length);
  // Returns false (and changes nothing) if the block is already claimed.
  bool Claim(uint64_t pool_block);
  void Unclaim(uint64_t pool_block);
  bool claimed(uint64_t pool_block) const noexcept;
  // Claimed blocks with more than one reference, ascending.
  std::vector<uint64_t> SharedMetadata() const;
  // Ends stage 1.
  void Finish();

  // Stage 2.
  uint32_t count(uint64_t pool_block) const noexcept;
  void Increment(uint64_t pool_block);
  // A block whose count is 0 among the covered ones, searching upwards from
  // `hint`; 0 if none.
  uint64_t FindFree(uint64_t hint) const noexcept;
  // Blocks with a non-zero count.
  uint64_t used() const noexcept;

  // Either stage: the first pool block past the covered ones (at least
  // data_start + tracked; past every block referenced, claimed or
  // incremented), and covering more of them (up to the data area's end).
  uint64_t covered_end() const noexcept { return start_ + size_; }
  void Cover(uint64_t end_block);
  // The first pool block past every block ever referenced, claimed or
  // incremented (data_start if none).
  uint64_t referenced_end() const noexcept { return start_ + high_; }

 private:
  uint64_t Index(uint64_t pool_block) const noexcept { return pool_block - start_; }
  // Covers [start_, end_block) and counts it as referenced.
  void Touch(uint64_t end_block);

  uint64_t start_;
  uint64_t blocks_;               // of the data area
  uint64_t size_;                 // covered: counts_ and claimed_ describe [start_, start_ + size_)
  uint64_t high_ = 0;             // referenced_end() - start_
  std::vector<uint32_t> counts_;  // stage 1: differences (mod 2^32); 2: counts; size_ + 1
  std::vector<uint64_t> claimed_;  // bitset
  bool finished_ = false;
};

}  // namespace leasefs::check::internal
