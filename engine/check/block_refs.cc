#include "engine/check/block_refs.h"

#include <algorithm>
#include <cassert>

namespace leasefs::check::internal {

BlockRefs::BlockRefs(uint64_t data_start, uint64_t data_blocks, uint64_t tracked)
    : start_(data_start),
      blocks_(data_blocks),
      size_(std::min(tracked, data_blocks)),
      counts_(size_ + 1, 0),
      claimed_((size_ + 63) / 64, 0) {}

bool BlockRefs::Contains(uint64_t pool_block, uint64_t length) const noexcept {
  return length > 0 && pool_block >= start_ && pool_block - start_ < blocks_ &&
         length <= blocks_ - (pool_block - start_);
}

void BlockRefs::Touch(uint64_t end_block) {
  high_ = std::max(high_, std::min(end_block - start_, blocks_));
  Cover(end_block);
}

void BlockRefs::Cover(uint64_t end_block) {
  const uint64_t want = std::min(end_block - start_, blocks_);
  if (end_block <= start_ || want <= size_) return;
  // Doubling, so that references found in rising order cost O(1) each.
  const uint64_t size = std::min(blocks_, std::max(want, size_ * 2));
  // A difference array stays valid when it grows: the sentinel at the old
  // end becomes an ordinary entry, and the new entries are 0. Stage-2
  // counts past the old end are 0 too.
  counts_.resize(size + 1, 0);
  claimed_.resize((size + 63) / 64, 0);
  size_ = size;
}

// Differences wrap modulo 2^32; the prefix sums are exact as long as no block
// has 2^32 or more references, which would need more extents than fit in a
// pool.
void BlockRefs::Add(uint64_t pool_block, uint64_t length) {
  assert(!finished_ && Contains(pool_block, length));
  Touch(pool_block + length);
  counts_[Index(pool_block)] += 1;
  counts_[Index(pool_block) + length] -= 1;
}

void BlockRefs::Remove(uint64_t pool_block, uint64_t length) {
  assert(!finished_ && Contains(pool_block, length));
  Touch(pool_block + length);
  counts_[Index(pool_block)] -= 1;
  counts_[Index(pool_block) + length] += 1;
}

bool BlockRefs::Claim(uint64_t pool_block) {
  Touch(pool_block + 1);
  const uint64_t i = Index(pool_block);
  const uint64_t bit = uint64_t{1} << (i % 64);
  if (claimed_[i / 64] & bit) return false;
  claimed_[i / 64] |= bit;
  return true;
}

void BlockRefs::Unclaim(uint64_t pool_block) {
  const uint64_t i = Index(pool_block);
  if (i >= size_) return;
  claimed_[i / 64] &= ~(uint64_t{1} << (i % 64));
}

bool BlockRefs::claimed(uint64_t pool_block) const noexcept {
  const uint64_t i = Index(pool_block);
  return i < size_ && ((claimed_[i / 64] >> (i % 64)) & 1);
}

std::vector<uint64_t> BlockRefs::SharedMetadata() const {
  assert(!finished_);
  std::vector<uint64_t> shared;
  uint32_t running = 0;
  for (uint64_t i = 0; i < size_; ++i) {
    running += counts_[i];
    if (running > 1 && ((claimed_[i / 64] >> (i % 64)) & 1)) shared.push_back(start_ + i);
  }
  return shared;
}

void BlockRefs::Finish() {
  assert(!finished_);
  uint32_t running = 0;
  for (uint64_t i = 0; i < size_; ++i) {
    running += counts_[i];
    counts_[i] = running;
  }
  counts_[size_] = 0;
  finished_ = true;
}

uint32_t BlockRefs::count(uint64_t pool_block) const noexcept {
  assert(finished_);
  const uint64_t i = Index(pool_block);
  return i < size_ ? counts_[i] : 0;
}

void BlockRefs::Increment(uint64_t pool_block) {
  assert(finished_);
  Touch(pool_block + 1);
  ++counts_[Index(pool_block)];
}

uint64_t BlockRefs::FindFree(uint64_t hint) const noexcept {
  assert(finished_);
  for (uint64_t i = hint < start_ ? 0 : Index(hint); i < size_; ++i) {
    if (counts_[i] == 0) return start_ + i;
  }
  return 0;
}

uint64_t BlockRefs::used() const noexcept {
  assert(finished_);
  uint64_t n = 0;
  for (uint64_t i = 0; i < size_; ++i) n += counts_[i] != 0;
  return n;
}

}  // namespace leasefs::check::internal
