#include "engine/allocator.h"

#include <algorithm>
#include <cassert>
#include <iterator>

namespace leasefs::engine {

void BlockAllocator::Init(uint64_t first, uint64_t count, const uint32_t* refcounts,
                          uint64_t known) {
  first_ = first;
  count_ = count;
  free_ = 0;
  by_start_.clear();
  by_size_.clear();
  known = std::min(known, count);
  uint64_t run = 0;
  for (uint64_t i = 0; i < known; ++i) {
    if (refcounts[i] == 0) {
      ++run;
      continue;
    }
    if (run) Insert(first + i - run, run);
    run = 0;
  }
  // Every block past the known ones is free, joined to a free run ending
  // at the last known block.
  run += count - known;
  if (run) Insert(first + count - run, run);
}

void BlockAllocator::Insert(uint64_t start, uint64_t count) {
  by_start_.emplace(start, count);
  by_size_.emplace(count, start);
  free_ += count;
}

void BlockAllocator::Erase(std::map<uint64_t, uint64_t>::iterator it) {
  by_size_.erase({it->second, it->first});
  free_ -= it->second;
  by_start_.erase(it);
}

void BlockAllocator::Carve(std::map<uint64_t, uint64_t>::iterator it, uint64_t start, uint64_t n) {
  const uint64_t run_start = it->first, run_end = it->first + it->second;
  assert(start >= run_start && start + n <= run_end);
  Erase(it);
  if (start > run_start) Insert(run_start, start - run_start);
  if (start + n < run_end) Insert(start + n, run_end - start - n);
}

uint64_t BlockAllocator::Allocate(uint64_t count, uint64_t goal, std::vector<BlockRange>* out) {
  uint64_t got = 0;
  // 1. Continue right where the caller's file ends.
  if (goal != 0 && count != 0) {
    auto it = by_start_.upper_bound(goal);
    if (it != by_start_.begin()) {
      --it;
      if (goal < it->first + it->second) {
        const uint64_t n = std::min(count, it->first + it->second - goal);
        Carve(it, goal, n);
        out->push_back({goal, n});
        got += n;
      }
    }
  }
  // 2. The smallest run that holds the rest; 3. else the largest runs.
  while (got < count && !by_size_.empty()) {
    const uint64_t want = count - got;
    auto fit = by_size_.lower_bound({want, 0});
    if (fit == by_size_.end()) fit = std::prev(by_size_.end());
    const uint64_t start = fit->second;
    const uint64_t n = std::min(want, fit->first);
    Carve(by_start_.find(start), start, n);
    if (!out->empty() && out->back().end() == start) {
      out->back().count += n;
    } else {
      out->push_back({start, n});
    }
    got += n;
  }
  return got;
}

void BlockAllocator::Free(BlockRange r) {
  if (r.count == 0) return;
  assert(r.start >= first_ && r.end() <= first_ + count_);
  uint64_t start = r.start, n = r.count;
  auto next = by_start_.lower_bound(start);
  assert(next == by_start_.end() || next->first >= r.end());
  if (next != by_start_.begin()) {
    auto prev = std::prev(next);
    assert(prev->first + prev->second <= start);
    if (prev->first + prev->second == start) {
      start = prev->first;
      n += prev->second;
      Erase(prev);
    }
  }
  next = by_start_.lower_bound(start);
  if (next != by_start_.end() && next->first == start + n) {
    n += next->second;
    Erase(next);
  }
  Insert(start, n);
}

bool BlockAllocator::IsFree(BlockRange r) const {
  auto it = by_start_.upper_bound(r.start);
  if (it == by_start_.begin()) return false;
  --it;
  return r.start >= it->first && r.end() <= it->first + it->second;
}

}  // namespace leasefs::engine
