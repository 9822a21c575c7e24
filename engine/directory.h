// Directory: one directory's entries — a name index in memory over the
// directory blocks on media (docs/pool_format.md "Directories").
//
// Lookups are O(1) (hash of the name); finding room for a new entry looks at
// a bounded number of blocks; entries never move while they exist, so the
// readdir cookie of an entry (3 + block * 64 + slot) stays valid while other
// entries come and go.
//
// Like ExtentMap, mutators stage writes into a Tx and update the index at
// once; the caller commits before anyone can look. Thread safety: none.
#pragma once

#include <cstdint>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "base/status.h"
#include "engine/extent_map.h"
#include "engine/journal.h"
#include "engine/pool.h"
#include "engine/slot_bits.h"

namespace leasefs::engine {

// The position of an entry: directory block and slot within it.
struct DirPos {
  uint32_t block = 0;
  uint32_t slot = 0;
  // Readdir cookie of the entry (1 and 2 are "." and "..").
  uint64_t cookie() const { return 3 + uint64_t{block} * layout::kDirSlotsPerBlock + slot; }
  static DirPos FromCookie(uint64_t c) {
    c -= 3;
    return {static_cast<uint32_t>(c / layout::kDirSlotsPerBlock),
            static_cast<uint32_t>(c % layout::kDirSlotsPerBlock)};
  }
};

class Directory {
 public:
  struct Entry {
    uint64_t ino = 0;
    unsigned type = 0;  // DT_*
    DirPos pos;
  };
  // Where a new entry will go. new_block: the directory must first grow by a
  // block (which becomes block `pos.block`).
  struct Spot {
    DirPos pos;
    bool new_block = false;
  };

  // Reads the directory `ino` whose blocks `extents` maps.
  // Errors: EUCLEAN naming the directory and the problem.
  Status Load(const PoolView& pool, uint64_t ino, const ExtentMap& extents);
  // Starts an empty directory (a new inode).
  void InitEmpty(const PoolView& pool, uint64_t ino);

  std::optional<Entry> Find(std::string_view name) const;
  size_t size() const noexcept { return names_.size(); }
  bool empty() const noexcept { return names_.empty(); }
  uint32_t block_count() const noexcept { return static_cast<uint32_t>(blocks_.size()); }

  // Where an entry with a name of `name_len` bytes fits.
  Spot FindSpot(size_t name_len) const;
  // Formats the fresh pool block `pool_block` as the directory's next block
  // (in place, flushed; the caller maps it and journals the mapping).
  void AddBlock(uint64_t pool_block);
  // Stages a new entry at `spot`. REQUIRES: FindSpot's answer for this name,
  // after AddBlock if it asked for a new block; name is valid and absent.
  void Insert(Tx& tx, const Spot& spot, std::string_view name, uint64_t ino, unsigned type);
  // Stages removal of the entry `name`. REQUIRES: it exists.
  void Remove(Tx& tx, std::string_view name);
  // Stages pointing the existing entry `name` at another inode.
  void Retarget(Tx& tx, std::string_view name, uint64_t ino, unsigned type);

  // An entry as listed by Next: the name points into the pool.
  struct Listed {
    std::string_view name;
    uint64_t ino;
    unsigned type;
    DirPos pos;
  };
  // The first entry at or after `from` in cookie order.
  std::optional<Listed> Next(DirPos from) const;
  // Pool block of each directory block, in order.
  const std::vector<uint64_t>& pool_blocks() const noexcept { return pool_blocks_; }

 private:

  char* SlotPtr(DirPos p) const;
  // Checks block `index` and marks its slots; appends its entries to *found
  // (names pointing into the pool).
  Status LoadBlock(uint32_t index, std::vector<Listed>* found);
  void MarkUsed(DirPos p, uint32_t slots, bool used);

  PoolView pool_;
  uint64_t ino_ = 0;
  std::unordered_map<std::string, Entry, NameHash, NameEq> names_;
  std::vector<SlotBits> blocks_;
  std::vector<uint64_t> pool_blocks_;
  std::set<uint32_t> nonfull_;  // blocks with at least one free slot
};

// True for names a directory may hold: 1..255 bytes, no '/' or NUL, not "."
// or "..".
bool ValidName(std::string_view name);

}  // namespace leasefs::engine
