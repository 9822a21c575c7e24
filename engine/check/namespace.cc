// Phase "namespace": orphans (invariant 8 of docs/pool_format.md),
// connectivity from the root (6) with reattachment under /lost+found, and link
// counts (5).
#include <algorithm>
#include <cstring>
#include <memory>

#include <sys/stat.h>

#include "engine/check/checker.h"
#include "engine/check/util.h"

namespace leasefs::check::internal {

using namespace layout;

// An orphan (nlink 0, named by no entry, and for a directory empty) is legal:
// it was unlinked while open, and the next mount reclaims it. Repair reclaims
// it now.
void Checker::HandleOrphans() {
  for (uint64_t ino = 2; ino < info_.size(); ++ino) {
    InodeInfo& info = info_[ino];
    if (info.type == 0 || info.nlink != 0 || info.links != 0 || info.named_in != 0) continue;
    if (info.type == DT_DIR && info.entries != 0) continue;  // disconnected, not orphaned
    ++report_->orphans;
    const std::string what =
        std::string("orphan ") + TypeName(info.type) + " (nlink 0: unlinked while open)";
    if (!opts_.repair) {
      info.orphan = true;
      Note(InodeWhere(ino), what + "; the next mount reclaims it");
      continue;
    }
    if (IntentUses(ino)) {
      // The mount finishes the change first (a clone may read from an
      // orphan), then reclaims it; reclaiming it now would leave the change
      // half done.
      info.orphan = true;
      Note(InodeWhere(ino), what + "; kept for the pending change in slot 0: the next mount " +
                                "finishes that, then reclaims it");
      continue;
    }
    Note(InodeWhere(ino),
         what + ": reclaimed it and its " + Plural(info.blocks, "block", "blocks"));
    for (const Ref* r = RefsBegin(ino); r != RefsEnd(ino); ++r) {
      if (r->length != 0) released_.emplace_back(r->pool_block, r->pool_block + r->length);
    }
    ClearCountedInode(ino);
  }
}

// ---------------------------------------------------------------------------
// Connectivity

void Checker::CheckConnectivity() {
  for (const auto& [ino, what] : FindDisconnected()) Reattach(ino, what);
}

// Returns the inodes to reattach: the top of every directory subtree that does
// not hang from the root, and every non-directory that no entry names.
// Following each directory's kept entry upwards reaches the root, a directory
// without one, or (a cycle) the path itself; each directory is walked once.
std::vector<std::pair<uint64_t, std::string>> Checker::FindDisconnected() {
  enum : uint8_t { kUnseen, kOnPath, kSettled };
  std::vector<uint8_t> state(info_.size(), kUnseen);
  state[kRootIno] = kSettled;
  std::vector<std::pair<uint64_t, std::string>> tops;
  std::vector<uint64_t> path;
  const std::string unreachable = "directory is not reachable from the root ";
  for (uint64_t ino = 2; ino < info_.size(); ++ino) {
    const InodeInfo& info = info_[ino];
    if (info.type == 0 || info.orphan) continue;
    if (info.type != DT_DIR) {
      if (info.links == 0)
        tops.emplace_back(
            ino, "nlink " + std::to_string(info.nlink) + " but no directory entry names it");
      continue;
    }
    path.clear();
    for (uint64_t x = ino;;) {
      if (state[x] == kSettled) break;
      if (state[x] == kOnPath) {
        tops.emplace_back(x, unreachable + "(its entry is inside its own subtree)");
        break;
      }
      state[x] = kOnPath;
      path.push_back(x);
      if (info_[x].named_in == 0) {
        tops.emplace_back(x, unreachable + "(no entry names it)");
        break;
      }
      x = info_[x].named_in;
    }
    for (uint64_t x : path) state[x] = kSettled;
  }
  return tops;
}

void Checker::Reattach(uint64_t ino, const std::string& what) {
  std::string why;
  // Before any reference into info_: making /lost+found may raise the inode
  // mark, which grows info_ (GrowInodeTable) and moves its elements.
  const bool ready = EnsureLostFound(&why);
  InodeInfo& t = info_[ino];
  if (!ready) {
    Unfixable(InodeWhere(ino), what + "; cannot move it to /lost+found: " + why);
    t.detached = true;
    return;
  }
  const std::string name = LostFoundName(ino);
  if (opts_.repair && !AppendEntry(&lf_append_, name, ino, t.type)) {
    Unfixable(InodeWhere(ino), what + "; cannot move it to /lost+found: the pool is full");
    t.detached = true;
    return;
  }
  Problem(InodeWhere(ino), what, "moved it to /lost+found as " + name);
  if (t.type != DT_DIR) {
    ++t.links;
  } else {
    if (t.named_in != 0) LeaveOldEntry(ino);
    t.named_in = static_cast<uint32_t>(lf_ino_);
    t.parent = static_cast<uint32_t>(lf_ino_);
    t.links = 1;
    writer_->Put(&InodeAt(ino)->parent, lf_ino_);
  }
  if (lf_virtual_) return;
  InodeInfo& lf = info_[lf_ino_];
  ++lf.entries;
  if (t.type == DT_DIR) {
    ++lf.subdirs;
    ++lf.nlink;  // the run's own change: keeps a correct count correct
    writer_->Put(&InodeAt(lf_ino_)->nlink, lf.nlink);
  }
}

// A directory in a cycle moves out of the directory that held its entry.
void Checker::LeaveOldEntry(uint64_t ino) {
  InodeInfo& t = info_[ino];
  InodeInfo& holder = info_[t.named_in];
  ZeroEntry(dir_refs_[t.kept_ref].loc);
  --holder.entries;
  --holder.subdirs;
  if (holder.nlink > 0) {
    --holder.nlink;
    writer_->Put(&InodeAt(t.named_in)->nlink, holder.nlink);
  }
}

// Finds /lost+found, or creates it, once per run.
bool Checker::EnsureLostFound(std::string* why) {
  if (lf_state_ == LostFound::kUnknown) {
    const bool exists = lf_ino_ != 0 && IsDir(lf_ino_) && info_[lf_ino_].named_in == kRootIno &&
                        dir_refs_[info_[lf_ino_].kept_ref].loc == lf_entry_loc_;
    if (exists) {
      if (opts_.repair) InitAppender(&lf_append_, lf_ino_);
      lf_state_ = LostFound::kReady;
    } else if (lf_name_owner_ != 0) {
      lf_why_ = "that name is taken by inode " + std::to_string(lf_name_owner_);
      lf_state_ = LostFound::kFailed;
    } else {
      lf_ino_ = 0;
      lf_state_ = CreateLostFound(&lf_why_) ? LostFound::kReady : LostFound::kFailed;
    }
  }
  *why = lf_why_;
  return lf_state_ == LostFound::kReady;
}

bool Checker::CreateLostFound(std::string* why) {
  uint64_t ino = 2;
  while (ino < info_.size() && info_[ino].type != 0) ++ino;
  if (ino == info_.size()) ino = GrowInodeTable();
  if (ino == 0) {
    *why = "no free inode to create it";
    return false;
  }
  InodeInfo& root = info_[kRootIno];
  if (!opts_.repair) {
    // A check only notes what repair would do.
    lf_virtual_ = true;
    ++root.subdirs;
    ++root.entries;
    ++root.nlink;
    return true;
  }
  const uint64_t block = AllocateBlock();
  if (block == 0) {
    *why = "no free block to create it";
    return false;
  }
  WriteLostFound(ino, block);
  Appender at_root;
  InitAppender(&at_root, kRootIno);
  if (!AppendEntry(&at_root, "lost+found", ino, DT_DIR)) {
    *why = "no room in the root directory";
    return false;
  }
  InodeInfo& lf = info_[ino];
  lf = InodeInfo{};
  lf.type = DT_DIR;
  lf.nlink = 2;
  lf.parent = lf.named_in = kRootIno;
  lf.links = 1;
  lf.blocks = 1;
  ++root.subdirs;
  ++root.entries;
  ++root.nlink;
  writer_->Put(&InodeAt(kRootIno)->nlink, root.nlink);
  lf_ino_ = ino;
  Note(InodeWhere(ino), "created /lost+found");
  return true;
}

// Stages an empty /lost+found in inode `ino` with one directory block.
void Checker::WriteLostFound(uint64_t ino, uint64_t block) {
  alignas(8) char buf[kBlockSize] = {};
  DirBlockHeader h{};
  std::memcpy(h.magic, kDirBlockMagic, sizeof(h.magic));
  h.owner_ino = ino;
  std::memcpy(buf, &h, sizeof(h));
  writer_->Copy(BlockPtr(block), buf, sizeof(buf));

  Inode in{};
  in.mode = S_IFDIR | 0700;
  in.nlink = 2;
  in.size = kBlockSize;
  in.blocks = 1;
  in.atime_ns = in.mtime_ns = in.ctime_ns = in.btime_ns = now_ns_;
  in.parent = kRootIno;
  // A slot this run initialized holds garbage until the journal zeroes it:
  // it was never allocated, so its first generation is 1.
  in.generation = ino >= fresh_slots_from_ ? 1 : InodeAt(ino)->generation + 1;
  if (in.generation == 0) in.generation = 1;
  const Extent e{0, block, 1, 0};
  std::memcpy(in.inline_area, &e, sizeof(e));
  writer_->Put(InodeAt(ino), in);

  lf_append_ = Appender{};
  lf_append_.dir = ino;
  lf_append_.blocks = {block};
  lf_append_.fresh_from = 0;
  lf_append_.fresh_inode = true;
  lf_append_.last = {e, Offset(InodeAt(ino)->inline_area)};
  lf_append_.inline_used = 1;
}

std::string Checker::LostFoundName(uint64_t ino) {
  const std::string base = "#" + std::to_string(ino);
  std::string name = base;
  for (int i = 1; lf_names_.count(name) != 0; ++i) name = base + "." + std::to_string(i);
  lf_names_.insert(name);
  return name;
}

// ---------------------------------------------------------------------------
// Appending entries (repair only)

void Checker::InitAppender(Appender* a, uint64_t dir) {
  *a = Appender{};
  a->dir = dir;
  for (const Ref* r = RefsBegin(dir); r != RefsEnd(dir); ++r) {
    if (r->length == 0) continue;
    if (r->kind == RefKind::kChain) a->chain_blocks.push_back(r->pool_block);
    if (r->kind != RefKind::kDir) continue;
    for (uint32_t j = 0; j < r->length; ++j) a->blocks.push_back(r->pool_block + j);
    std::memcpy(&a->last.e, Ptr(r->loc), sizeof(Extent));
    a->last.loc = r->loc;
  }
  a->chain_head = InodeAt(dir)->extent_block;
}

// Adds a one-slot entry at the first free slot from the scan position on.
bool Checker::AppendEntry(Appender* a, std::string_view name, uint64_t target, uint8_t type) {
  for (;;) {
    if (a->block == a->blocks.size() && !GrowDirectory(a)) return false;
    const uint64_t block = a->blocks[a->block];
    const bool fresh = a->block >= a->fresh_from;
    for (; a->slot < kDirSlotsPerBlock; ++a->slot) {
      const uint64_t loc = block * kBlockSize + a->slot * kDirSlotSize;
      DirEntryHeader h{};
      if (!fresh) std::memcpy(&h, Ptr(loc), sizeof(h));
      if (h.ino != 0) {
        // Well formed (phase "directories" saw to it); skip its other slots.
        a->slot += std::max<uint32_t>(h.slot_count, 1) - 1;
        continue;
      }
      WriteEntry(loc, name, target, type);
      ++a->slot;
      return true;
    }
    ++a->block;
    a->slot = 1;
  }
}

void Checker::WriteEntry(uint64_t loc, std::string_view name, uint64_t target, uint8_t type) {
  alignas(8) char buf[kDirSlotSize] = {};
  const DirEntryHeader h{target, 1, type, static_cast<uint8_t>(name.size()), {}};
  std::memcpy(buf, &h, sizeof(h));
  std::memcpy(buf + sizeof(h), name.data(), name.size());  // names here fit one slot
  writer_->Copy(Ptr(loc), buf, sizeof(buf));
}

// Adds an empty block at the end of the directory. Staged in the order that
// keeps every intermediate state safe: the block and its refcount, then the
// extent that maps it, then the size.
bool Checker::GrowDirectory(Appender* a) {
  const uint64_t block = AllocateBlock();
  if (block == 0) return false;
  const uint64_t index = a->blocks.size();
  alignas(8) char buf[kBlockSize] = {};
  DirBlockHeader h{};
  std::memcpy(h.magic, kDirBlockMagic, sizeof(h.magic));
  h.owner_ino = a->dir;
  h.block_index = index;
  std::memcpy(buf, &h, sizeof(h));
  writer_->Copy(BlockPtr(block), buf, sizeof(buf));
  if (!PlaceExtent(a, block)) return false;
  a->blocks.push_back(block);
  a->fresh_from = std::min(a->fresh_from, static_cast<size_t>(index));
  InodeInfo& info = info_[a->dir];
  ++info.blocks;
  writer_->Put(&InodeAt(a->dir)->blocks, info.blocks);
  writer_->Put(&InodeAt(a->dir)->size, (index + 1) * kBlockSize);
  return true;
}

// Maps `block` as the directory's next file block: by lengthening the last
// extent when it is adjacent, else in a free extent slot, else in a new chain
// block.
bool Checker::PlaceExtent(Appender* a, uint64_t block) {
  const uint64_t index = a->blocks.size();
  Extent& last = a->last.e;
  if (last.length != 0 && last.length < UINT32_MAX && last.pool_block + last.length == block &&
      last.file_block + last.length == index) {
    ++last.length;
    writer_->Put(&reinterpret_cast<Extent*>(Ptr(a->last.loc))->length, last.length);
    return true;
  }
  const Extent e{index, block, 1, 0};
  uint64_t loc = FreeExtentSlot(a);
  if (loc != 0) {
    writer_->Put(reinterpret_cast<Extent*>(Ptr(loc)), e);
  } else {
    const uint64_t chain = AllocateBlock();
    if (chain == 0) return false;
    auto eb = std::make_unique<ExtentBlock>();
    std::memcpy(eb->header.magic, kExtentBlockMagic, sizeof(eb->header.magic));
    eb->header.owner_ino = a->dir;
    eb->header.next_block = a->chain_head;
    eb->slots[0] = e;
    writer_->Copy(BlockPtr(chain), eb.get(), sizeof(ExtentBlock));
    writer_->Put(&InodeAt(a->dir)->extent_block, chain);
    a->chain_head = chain;
    a->fresh_chain_from = std::min(a->fresh_chain_from, a->chain_blocks.size());
    a->chain_pos = a->chain_blocks.size();  // every earlier block is full
    a->chain_slot = 1;
    a->chain_blocks.push_back(chain);
    loc = Offset(&reinterpret_cast<ExtentBlock*>(BlockPtr(chain))->slots[0]);
  }
  a->last = {e, loc};
  return true;
}

// A free extent slot of the directory's inode or chain, or 0. Slots of an
// inode or chain block this run created are free unless this run used them
// (the pool may not hold them yet). The chain is searched from a cursor:
// slots only fill up during a run, so nothing behind it frees up.
uint64_t Checker::FreeExtentSlot(Appender* a) {
  const auto* inline_slots = reinterpret_cast<const Extent*>(InodeAt(a->dir)->inline_area);
  for (uint32_t i = 0; i < kInlineExtents; ++i) {
    if ((a->inline_used >> i) & 1) continue;
    if (a->fresh_inode || Read<uint32_t>(Offset(&inline_slots[i].length)) == 0) {
      a->inline_used |= static_cast<uint8_t>(1u << i);
      return Offset(&inline_slots[i]);
    }
  }
  for (; a->chain_pos < a->chain_blocks.size(); ++a->chain_pos, a->chain_slot = 0) {
    const auto* eb = reinterpret_cast<const ExtentBlock*>(BlockPtr(a->chain_blocks[a->chain_pos]));
    const bool fresh = a->chain_pos >= a->fresh_chain_from;
    for (; a->chain_slot < kExtentsPerBlock; ++a->chain_slot) {
      const Extent* slot = &eb->slots[a->chain_slot];
      if (fresh || Read<uint32_t>(Offset(&slot->length)) == 0) {
        ++a->chain_slot;
        return Offset(slot);
      }
    }
  }
  return 0;
}

// A free data block, counted and given refcount 1 at once. Blocks whose
// stored refcount is also 0 come first: a leaked block is left for the
// refcount phase to report, as a check run (which allocates nothing) does.
uint64_t Checker::AllocateBlock() {
  for (uint64_t b = blocks_->FindFree(std::max(alloc_hint_, sb_.data_start)); b != 0;
       b = blocks_->FindFree(b + 1)) {
    if (Read<uint32_t>(Offset(RefcountAt(b))) != 0) continue;
    alloc_hint_ = b + 1;
    blocks_->Increment(b);
    writer_->Fill32(RefcountAt(b), 1, 1);
    return b;
  }
  uint64_t b = blocks_->FindFree(sb_.data_start);
  // Every block below the refcount mark is in use: initialize some more.
  while (b == 0 && GrowRefcounts()) b = blocks_->FindFree(sb_.data_start);
  if (b == 0) return 0;
  blocks_->Increment(b);
  writer_->Fill32(RefcountAt(b), 1, 1);
  return b;
}

// ---------------------------------------------------------------------------
// Link counts

void Checker::CheckLinkCounts() {
  for (uint64_t ino = 1; ino < info_.size(); ++ino) {
    Progress("link counts", ino - 1, info_.size() - 1);
    InodeInfo& info = info_[ino];
    if (info.type == 0 || info.orphan || info.detached) continue;
    const bool dir = info.type == DT_DIR;
    const uint64_t want64 = dir ? uint64_t{2} + info.subdirs : info.links;
    const uint32_t want = want64 > UINT32_MAX ? UINT32_MAX : static_cast<uint32_t>(want64);
    if (info.nlink == want) continue;
    const std::string was = "nlink " + std::to_string(info.nlink) + " but ";
    Problem(InodeWhere(ino),
            dir ? was + "it has " + Plural(info.subdirs, "subdirectory", "subdirectories") +
                      " (expected " + std::to_string(want) + ")"
                : was + Plural(info.links, "entry names", "entries name") + " it",
            "set nlink to " + std::to_string(want));
    info.nlink = want;
    writer_->Put(&InodeAt(ino)->nlink, want);
  }
  Progress("link counts", info_.size() - 1, info_.size() - 1);
}

}  // namespace leasefs::check::internal
