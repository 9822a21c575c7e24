#include "engine/reach_index.h"

#include <algorithm>
#include <cassert>
#include <iterator>

namespace leasefs::engine {

// ---------------------------------------------------------------------------
// Coverage

void Coverage::Split(uint64_t at) {
  auto it = level_.upper_bound(at);
  if (it == level_.begin()) {
    level_.emplace(at, 0);
    return;
  }
  const uint32_t before = std::prev(it)->second;
  level_.emplace(at, before);  // no-op when `at` is a boundary already
}

void Coverage::Change(BlockRange r, int delta) {
  if (r.count == 0) return;
  Split(r.start);
  Split(r.end());
  auto first = level_.find(r.start), last = level_.find(r.end());
  for (auto it = first; it != last; ++it) {
    assert(delta > 0 || it->second > 0);
    it->second = static_cast<uint32_t>(static_cast<int64_t>(it->second) + delta);
  }
  // Merge boundaries that no longer separate different levels, around and
  // inside the changed range.
  auto it = first == level_.begin() ? first : std::prev(first);
  const auto stop = std::next(last);
  for (uint32_t prev = UINT32_MAX; it != stop;) {
    const bool leading_zero = it == level_.begin() && it->second == 0;
    if (it->second == prev || leading_zero) {
      it = level_.erase(it);
      continue;
    }
    prev = it->second;
    ++it;
  }
}

bool Coverage::Covers(uint64_t block) const {
  auto it = level_.upper_bound(block);
  return it != level_.begin() && std::prev(it)->second > 0;
}

std::vector<BlockRange> Coverage::CoveredParts(BlockRange r) const {
  std::vector<BlockRange> out;
  if (r.count == 0) return out;
  auto it = level_.upper_bound(r.start);
  uint64_t at = r.start;
  uint32_t level = it == level_.begin() ? 0 : std::prev(it)->second;
  for (;;) {
    const uint64_t next = it == level_.end() ? r.end() : std::min(it->first, r.end());
    if (level > 0 && next > at) {
      if (!out.empty() && out.back().end() == at) {
        out.back().count += next - at;
      } else {
        out.push_back({at, next - at});
      }
    }
    if (it == level_.end() || it->first >= r.end()) break;
    at = it->first;
    level = it->second;
    ++it;
  }
  return out;
}

std::vector<BlockRange> Coverage::UncoveredParts(BlockRange r) const {
  std::vector<BlockRange> out;
  ForEachPart(r, [&out](BlockRange part, bool covered) {
    if (!covered) out.push_back(part);
  });
  return out;
}

// ---------------------------------------------------------------------------
// BlockSet

void BlockSet::Insert(BlockRange r) {
  if (r.count == 0) return;
  uint64_t start = r.start, end = r.end();
  auto it = runs_.upper_bound(start);
  if (it != runs_.begin() && std::prev(it)->second >= start) {
    --it;
    assert(it->second == start && "REQUIRES: not in the set");
    start = it->first;
    it = runs_.erase(it);
  }
  if (it != runs_.end() && it->first == end) {
    end = it->second;
    it = runs_.erase(it);  // (the assert below must not read an erased node)
  }
  assert(it == runs_.end() || it->first >= end);
  runs_.emplace(start, end);
  blocks_ += r.count;
}

void BlockSet::Erase(BlockRange r) {
  for (const BlockRange& p : Parts(r)) {
    auto it = std::prev(runs_.upper_bound(p.start));
    const uint64_t s = it->first, e = it->second;
    runs_.erase(it);
    if (s < p.start) runs_.emplace(s, p.start);
    if (p.end() < e) runs_.emplace(p.end(), e);
    blocks_ -= p.count;
  }
}

std::vector<BlockRange> BlockSet::Parts(BlockRange r) const {
  std::vector<BlockRange> out;
  if (r.count == 0) return out;
  auto it = runs_.upper_bound(r.start);
  if (it != runs_.begin()) --it;
  for (; it != runs_.end() && it->first < r.end(); ++it) {
    const uint64_t s = std::max(it->first, r.start), e = std::min(it->second, r.end());
    if (s < e) out.push_back({s, e - s});
  }
  return out;
}

uint64_t BlockSet::CountIn(BlockRange r) const {
  uint64_t n = 0;
  for (const BlockRange& p : Parts(r)) n += p.count;
  return n;
}

bool BlockSet::Contains(uint64_t block) const { return CountIn({block, 1}) == 1; }

}  // namespace leasefs::engine
