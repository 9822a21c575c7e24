// XattrSet: one inode's extended attributes — a name index in memory over
// the xattr structure on media (docs/pool_format.md "Extended attributes").
//
// The structure is either the single xattr block of the older format (read,
// and rewritten whole when an attribute is removed) or a chain of xattr
// leaves: 64-byte slots holding entries, each entry its name and either the
// value or the runs of the value blocks that hold it.
//
// The index is the engine's truth about which blocks the set owns and where
// each entry lies; it is built and validated at mount. The bytes on media are
// checked against it whenever they are read (ReadValue): an entry or a value
// changed behind the engine's back (by a process that writes the pool file)
// gives EIO, never a crash, and never a write based on what it says.
//
// Lookups are O(1) (hash of the name); finding room for a new entry looks at
// a bounded number of leaves. Like Directory, mutators stage writes into a Tx
// and update the index at once; the caller commits before anyone can look.
// Thread safety: none (the engine's lock).
#pragma once

#include <cstdint>
#include <functional>
#include <set>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "base/result.h"
#include "engine/allocator.h"
#include "engine/journal.h"
#include "engine/pool.h"
#include "engine/slot_bits.h"

namespace leasefs::engine {

class XattrSet {
 public:
  struct Entry {
    uint64_t block = 0;   // the leaf holding the entry, or the single block
    uint32_t pos = 0;     // leaf: first slot; single block: byte offset
    uint32_t slots = 0;   // leaf: slots the entry spans
    uint32_t value_len = 0;
    std::vector<BlockRange> runs;  // value blocks, in value order; empty: inline
  };
  // Where a new entry goes: slot `slot` of `leaf`, or slot 1 of a new leaf.
  struct Spot {
    uint64_t leaf = 0;
    uint32_t slot = 1;
    bool new_leaf = false;
  };

  // Reads the structure whose first block is `block` (Inode::xattr_block of
  // `ino`). Errors: EUCLEAN naming the block and what is wrong with it.
  Status Load(const PoolView& pool, uint64_t ino, uint64_t block);
  // Starts an empty set of leaves.
  void InitEmpty(const PoolView& pool, uint64_t ino);

  // True while the set is the older format's single block.
  bool single() const noexcept { return single_ != 0; }
  bool empty() const noexcept { return names_.empty(); }
  size_t size() const noexcept { return names_.size(); }
  const Entry* Find(std::string_view name) const;
  // Leaves of the chain, in order (none for a single block).
  const std::vector<uint64_t>& leaves() const noexcept { return chain_; }
  // Calls f(range) for every block the set references (leaves, value runs,
  // the single block), once per reference.
  void ForEachBlock(const std::function<void(BlockRange)>& f) const;

  // The value of `name` (whose index entry is `e`), read from media and
  // checked against the index and the value's checksum.
  // Errors: EIO when the media disagree.
  Result<std::string> ReadValue(std::string_view name, const Entry& e) const;
  // Calls f(name) for every name, in the order of the structure on media,
  // until f returns false.
  void ForEachName(const std::function<bool(std::string_view)>& f) const;

  // --- leaves only (REQUIRES: !single()) ------------------------------------
  // Slots a new entry takes (`runs` value runs, 0 for an inline value).
  static uint32_t EntrySlots(size_t name_len, size_t value_len, size_t runs);
  // True if a value of `value_len` bytes goes to value blocks.
  static bool IsRemote(size_t name_len, size_t value_len);
  // Where an entry of `slots` slots fits. `replacing`, if not null, is the
  // entry of the same name that the new one replaces in the same
  // transaction: its slots count as free.
  Spot FindSpot(uint32_t slots, const Entry* replacing) const;
  // Formats the fresh pool block `block` as a leaf (in place, flushed) and
  // stages linking it at the end of the chain (or as the inode's
  // xattr_block). The caller claims the block.
  void AddLeaf(Tx& tx, uint64_t block);
  // Stages a new entry at `spot` (a spot FindSpot gave, after AddLeaf if it
  // asked for a new leaf, and after the Remove of the entry it replaces).
  // `runs` hold the value already (remote), or are empty (inline).
  // REQUIRES: `name` is absent.
  void Insert(Tx& tx, const Spot& spot, std::string_view name, std::string_view value,
              const std::vector<BlockRange>& runs);
  // Stages zeroing the entry `name`; appends its value runs to *freed.
  // REQUIRES: it exists.
  void Remove(Tx& tx, std::string_view name, std::vector<BlockRange>* freed);
  // If `leaf` holds no entry any more, stages unlinking it from the chain,
  // appends it to *freed and returns true.
  bool DropIfEmpty(Tx& tx, uint64_t leaf, std::vector<BlockRange>* freed);
  // Stages unlinking the first `count` leaves of the chain (however full),
  // appending them and their entries' value runs to *freed (freeing an
  // inode's attributes a few leaves per transaction).
  void DropHead(Tx& tx, size_t count, std::vector<BlockRange>* freed);
  // Value runs of the entries of each leaf that has some.
  std::unordered_map<uint64_t, size_t> RunsPerLeaf() const;

  // --- the single block only (REQUIRES: single()) ---------------------------
  // Stages rewriting the block without `name`, or, when it was the last
  // entry, unlinking the block (appended to *freed). REQUIRES: it exists.
  void RemoveFromSingle(Tx& tx, std::string_view name, std::vector<BlockRange>* freed);

 private:
  using Names = std::unordered_map<std::string, Entry, NameHash, NameEq>;

  Status LoadSingle(uint64_t block);
  Status LoadChain(uint64_t block);
  Status LoadLeaf(uint64_t leaf);
  Status LoadEntry(uint64_t leaf, uint32_t slot, uint32_t* slots);
  void MarkUsed(uint64_t leaf, uint32_t slot, uint32_t slots, bool used);
  // The field that links `leaf` into the chain: the inode's xattr_block or
  // the next_block of the leaf before it.
  uint64_t* LinkTo(size_t index) const;
  Result<std::string> ReadLeafValue(std::string_view name, const Entry& e) const;
  Result<std::string> ReadSingleValue(std::string_view name, const Entry& e) const;
  Status Damaged(std::string_view name, const std::string& what) const;

  PoolView pool_;
  uint64_t ino_ = 0;
  uint64_t single_ = 0;  // the single block, or 0
  Names names_;
  std::vector<uint64_t> chain_;                 // leaves in chain order
  std::unordered_map<uint64_t, SlotBits> leaves_;  // by pool block
  std::set<uint64_t> nonfull_;                  // leaves with a free slot
};

}  // namespace leasefs::engine
