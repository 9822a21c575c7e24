#include "engine/check/block_refs.h"

#include <cassert>

namespace leasefs::check::internal {

BlockRefs::BlockRefs(uint64_t data_start, uint64_t data_blocks)
    : start_(data_start),
      blocks_(data_blocks),
      counts_(data_blocks + 1, 0),
      claimed_((data_blocks + 63) / 64, 0) {}

bool BlockRefs::Contains(uint64_t pool_block, uint64_t length) const noexcept {
  return length > 0 && pool_block >= start_ && pool_block - start_ < blocks_ &&
         length <= blocks_ - (pool_block - start_);
}

// Differences wrap modulo 2^32; the prefix sums are exact as long as no block
// has 2^32 or more references, which would need more extents than fit in a
// pool.
void BlockRefs::Add(uint64_t pool_block, uint64_t length) {
  assert(!finished_ && Contains(pool_block, length));
  counts_[Index(pool_block)] += 1;
  counts_[Index(pool_block) + length] -= 1;
}

void BlockRefs::Remove(uint64_t pool_block, uint64_t length) {
  assert(!finished_ && Contains(pool_block, length));
  counts_[Index(pool_block)] -= 1;
  counts_[Index(pool_block) + length] += 1;
}

bool BlockRefs::Claim(uint64_t pool_block) {
  const uint64_t i = Index(pool_block);
  const uint64_t bit = uint64_t{1} << (i % 64);
  if (claimed_[i / 64] & bit) return false;
  claimed_[i / 64] |= bit;
  return true;
}

void BlockRefs::Unclaim(uint64_t pool_block) {
  const uint64_t i = Index(pool_block);
  claimed_[i / 64] &= ~(uint64_t{1} << (i % 64));
}

bool BlockRefs::claimed(uint64_t pool_block) const noexcept {
  const uint64_t i = Index(pool_block);
  return (claimed_[i / 64] >> (i % 64)) & 1;
}

std::vector<uint64_t> BlockRefs::SharedMetadata() const {
  assert(!finished_);
  std::vector<uint64_t> shared;
  uint32_t running = 0;
  for (uint64_t i = 0; i < blocks_; ++i) {
    running += counts_[i];
    if (running > 1 && ((claimed_[i / 64] >> (i % 64)) & 1)) shared.push_back(start_ + i);
  }
  return shared;
}

void BlockRefs::Finish() {
  assert(!finished_);
  uint32_t running = 0;
  for (uint64_t i = 0; i < blocks_; ++i) {
    running += counts_[i];
    counts_[i] = running;
  }
  counts_[blocks_] = 0;
  finished_ = true;
}

uint32_t BlockRefs::count(uint64_t pool_block) const noexcept {
  assert(finished_);
  return counts_[Index(pool_block)];
}

void BlockRefs::Increment(uint64_t pool_block) {
  assert(finished_);
  ++counts_[Index(pool_block)];
}

uint64_t BlockRefs::FindFree(uint64_t hint) const noexcept {
  assert(finished_);
  for (uint64_t i = hint < start_ ? 0 : Index(hint); i < blocks_; ++i) {
    if (counts_[i] == 0) return start_ + i;
  }
  return 0;
}

uint64_t BlockRefs::used() const noexcept {
  assert(finished_);
  uint64_t n = 0;
  for (uint64_t i = 0; i < blocks_; ++i) n += counts_[i] != 0;
  return n;
}

}  // namespace leasefs::check::internal
