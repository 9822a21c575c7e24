// ExtentMap: one inode's file-block -> pool-block map.
//
// On media the extents sit unordered in the inode's six inline slots and in a
// chain of extent blocks (docs/pool_format.md "Extents"). In memory they are
// indexed by file block, so every lookup is O(log n) however many extents a
// file has. The index is a B-tree (abseil's btree_map) rather than std::map:
// a lookup among 100,000 extents visits about 6 nodes of 256 bytes (7 records
// each) instead of 17 tree nodes scattered in memory, each a likely cache
// miss. Its iterators do not survive an insert or erase: no code here keeps
// one across a change.
//
// Mutators stage their slot writes into a Tx and update the index at once;
// the caller commits the Tx before anyone else can look (writer lock). They
// never fail: the caller first makes sure enough free slots exist (FreeSlots,
// ChainBlocksFor, AddChainBlock). Reference counts are the caller's business.
//
// Thread safety: none (the engine's lock protects it).
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include <absl/container/btree_map.h>

#include "base/status.h"
#include "engine/journal.h"
#include "engine/layout.h"
#include "engine/pool.h"

namespace leasefs::engine {

// A run of file blocks mapped to a run of pool blocks.
struct Mapping {
  uint64_t file_block = 0;
  uint64_t pool_block = 0;
  uint64_t length = 0;
  uint32_t flags = 0;  // layout::ExtentFlags
  uint64_t file_end() const { return file_block + length; }
  bool unwritten() const { return flags & layout::kExtentUnwritten; }
  bool operator==(const Mapping&) const = default;
};

class ExtentMap {
 public:
  // Worst-case new slots one Insert, Remove or MarkWritten call may need.
  static constexpr size_t kSlotsPerInsert = 1;
  static constexpr size_t kSlotsPerRemove = 1;
  static constexpr size_t kSlotsPerMarkWritten = 2;

  // Reads inode `ino`'s extents (inline slots and chain).
  // Errors: EUCLEAN naming the inode and the problem (extent outside the data
  // area, overlapping extents, unknown flags, bad chain block, chain cycle).
  Status Load(const PoolView& pool, uint64_t ino);
  // Starts an empty map for a newly created inode (whose image is staged but
  // not yet in the pool). `inline_slots`: false when the inline area holds
  // data (an inline symlink) instead of extents.
  void InitEmpty(const PoolView& pool, uint64_t ino, bool inline_slots);

  // The mapping containing `file_block`, if any.
  std::optional<Mapping> Find(uint64_t file_block) const;
  // The first mapping that ends after `file_block` (it may start after it).
  std::optional<Mapping> NextFrom(uint64_t file_block) const;
  // The mappings overlapping [file_block, file_block + count), clipped to it.
  std::vector<Mapping> Overlapping(uint64_t file_block, uint64_t count) const;
  // Every mapping in file order.
  std::vector<Mapping> All() const;

  uint64_t mapped_blocks() const noexcept { return mapped_; }
  size_t extent_count() const noexcept { return index_.size(); }
  bool empty() const noexcept { return index_.empty(); }
  // One past the last mapped file block (0 when empty).
  uint64_t end_block() const;
  const std::vector<uint64_t>& chain() const noexcept { return chain_; }

  // --- capacity -------------------------------------------------------------
  size_t free_slots() const noexcept { return free_.count(); }
  // Extent blocks to add so that `slots` slots are free.
  uint64_t ChainBlocksFor(size_t slots) const;
  // Appends the fresh (reserved, unreferenced) pool block `block` to the
  // chain: initialises it in place (flushed, not drained: the commit's drain
  // covers it) and stages the link.
  void AddChainBlock(Tx& tx, uint64_t block);
  // Unlinks the chain blocks at the end of the chain that hold no extents
  // (staged) and appends them to *blocks.
  void TrimChain(Tx& tx, std::vector<uint64_t>* blocks);

  // --- mutation -------------------------------------------------------------
  // Maps m. Merges with a neighbour that continues it on both sides.
  // REQUIRES: m's file range is unmapped; free_slots() >= kSlotsPerInsert.
  void Insert(Tx& tx, const Mapping& m);
  // Unmaps [file_block, file_block + count); appends what was mapped there
  // (clipped) to *removed in file order.
  // REQUIRES: free_slots() >= kSlotsPerRemove.
  void Remove(Tx& tx, uint64_t file_block, uint64_t count, std::vector<Mapping>* removed);
  // Clears the UNWRITTEN flag on [file_block, file_block + count).
  // REQUIRES: free_slots() >= kSlotsPerMarkWritten per unwritten extent the
  // range touches (CountUnwritten).
  void MarkWritten(Tx& tx, uint64_t file_block, uint64_t count);
  // Unwritten extents overlapping the range.
  size_t CountUnwritten(uint64_t file_block, uint64_t count) const;

 private:
  struct Rec {
    uint64_t pool_block;
    uint64_t length;
    uint32_t flags;
    uint32_t slot;
  };
  using Index = absl::btree_map<uint64_t, Rec>;

  // Forgets everything and attaches to inode `ino` of `pool`.
  void Reset(const PoolView& pool, uint64_t ino);
  layout::Extent* SlotPtr(uint32_t slot) const;
  void StageSlot(Tx& tx, uint32_t slot, uint64_t file_block, const Rec& r);
  void StageFree(Tx& tx, uint32_t slot);
  uint32_t TakeSlot();
  Status LoadSlot(uint32_t slot, const layout::Extent& e);
  Index::iterator Put(Tx& tx, uint64_t file_block, Rec r);  // new or reused slot
  Index::iterator Drop(Tx& tx, Index::iterator it);  // the one after it
  static Mapping ToMapping(Index::const_iterator it);

  // Free slots as a bitmap (slot s is bit s): a few bytes per file where a
  // set would cost hundreds. Take() hands out the lowest free slot.
  class FreeSlots {
   public:
    void Clear();
    void Add(uint32_t slot);
    uint32_t Take();  // REQUIRES: count() > 0
    size_t count() const noexcept { return count_; }
    // Free slots in [begin, end).
    size_t CountRange(uint32_t begin, uint32_t end) const;
    // Forgets slots [begin, end) (all free) and everything after them.
    void Truncate(uint32_t begin);

   private:
    std::vector<uint64_t> words_;
    size_t count_ = 0;
    size_t first_ = 0;  // no free slot below word first_
  };

  PoolView pool_;
  uint64_t ino_ = 0;
  layout::Inode* inode_ = nullptr;
  Index index_;
  std::vector<uint64_t> chain_;  // extent blocks in chain order
  FreeSlots free_;
  uint64_t mapped_ = 0;
};

}  // namespace leasefs::engine
