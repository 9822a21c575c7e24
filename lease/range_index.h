// RangeIndex: the leases of one file, found by the byte ranges they cover.
// Inserting costs O(log n), erasing O(1) (amortized).
//
// T has `uint64_t offset`, `uint64_t id` (unique) and `uint64_t end()` (the
// first byte past the range, RangeIndex::kToEnd for "to the end"). Ranges may
// overlap. Bounded ranges sit in a map by offset; the longest bounded length
// limits how far before a query a range that overlaps it can start, so a
// query costs O(log n + the ranges starting within that distance). That is
// O(log n + k) when lengths are alike, which is what many leases on one file
// look like; one very long range among many short ones makes queries scan the
// short ones before it. Ranges to the end of the file are kept apart, in
// offset order: each one starting before a query's end overlaps it.
//
// Not thread-safe; the table's mutex guards it.
#pragma once

#include <cstdint>
#include <limits>
#include <map>
#include <utility>

namespace leasefs::lease {

template <typename T>
class RangeIndex {
 public:
  static constexpr uint64_t kToEnd = std::numeric_limits<uint64_t>::max();

  bool empty() const { return bounded_.empty() && to_end_.empty(); }
  size_t size() const { return bounded_.size() + to_end_.size(); }

  using KeyT = std::pair<uint64_t, uint64_t>;  // (offset, id)
  using Map = std::map<KeyT, T*>;
  // Where an item sits, for Erase.
  using Pos = typename Map::iterator;

  Pos Insert(T* item) {
    if (item->end() == kToEnd) return to_end_.emplace(Key(item), item).first;
    ++lengths_[item->end() - item->offset];
    return bounded_.emplace(Key(item), item).first;
  }

  // REQUIRES: `pos` is what Insert returned for `item`, whose offset and end
  // have not changed since.
  void Erase(T* item, Pos pos) {
    if (item->end() == kToEnd) {
      to_end_.erase(pos);
      return;
    }
    bounded_.erase(pos);
    auto len = lengths_.find(item->end() - item->offset);
    if (--len->second == 0) lengths_.erase(len);
  }

  // Calls fn(T*) for every range overlapping [lo, hi), until fn returns
  // false. Returns false if fn stopped it. Ranges are visited bounded ones
  // first, each group in offset order.
  template <typename Fn>
  bool ForEachOverlap(uint64_t lo, uint64_t hi, Fn&& fn) const {
    if (lo >= hi) return true;
    if (!lengths_.empty()) {
      const uint64_t longest = lengths_.rbegin()->first;
      const uint64_t from = lo >= longest ? lo - longest + 1 : 0;
      for (auto it = bounded_.lower_bound({from, 0}); it != bounded_.end(); ++it) {
        if (it->first.first >= hi) break;
        if (it->second->end() > lo && !fn(it->second)) return false;
      }
    }
    for (auto it = to_end_.begin(); it != to_end_.end() && it->first.first < hi; ++it) {
      if (!fn(it->second)) return false;
    }
    return true;
  }

 private:
  static KeyT Key(const T* item) { return {item->offset, item->id}; }

  Map bounded_;
  std::map<uint64_t, size_t> lengths_;  // of bounded_'s ranges: how many of each
  Map to_end_;
};

}  // namespace leasefs::lease
