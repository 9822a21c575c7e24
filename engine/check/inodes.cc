// Phase "inodes": every inode slot on its own (invariant 3 of
// docs/pool_format.md), its extents, extent chain, xattr block and directory
// block headers; then metadata blocks that something else also references.
#include <algorithm>
#include <cstring>

#include <sys/stat.h>

#include "engine/check/checker.h"
#include "engine/check/util.h"
#include "engine/superblock.h"

namespace leasefs::check::internal {

using namespace layout;

namespace {

constexpr uint64_t kMaxFileBlocks = kMaxFileSize / kBlockSize;
constexpr size_t kInlineOffset = offsetof(Inode, inline_area);

std::string DescribeExtent(const Extent& e) {
  return "extent {file block " + std::to_string(e.file_block) + ", pool block " +
         std::to_string(e.pool_block) + ", length " + std::to_string(e.length) + "}";
}

}  // namespace

void Checker::CheckInodes() {
  CheckSlotZero();
  CheckRoot();
  for (uint64_t ino = 1; ino < info_.size(); ++ino) {
    Progress("inodes", ino - 1, info_.size() - 1);
    ref_begin_[ino] = refs_.size();
    if (ino == kRootIno && root_replaced_) continue;
    CheckInode(ino);
  }
  Progress("inodes", info_.size() - 1, info_.size() - 1);
  ref_begin_[info_.size()] = refs_.size();
}

void Checker::CheckSlotZero() {
  const uint32_t mode = InodeAt(0)->mode;
  if (mode == 0) {
    NoteIntent();
    return;
  }
  Problem("inode 0", "slot 0 is in use (mode " + Octal(mode) + ")", "cleared it");
  ZeroInodeSlot(0);
}

// Slot 0 may hold an intent: a clone, punch, zero range, collapse or insert
// that a crash interrupted between two of its transactions. Every one of
// them left the files consistent, so it is no problem; the next mount
// finishes it (or drops a record that names no regular file).
void Checker::NoteIntent() {
  std::memcpy(&intent_, InodeAt(0), sizeof(intent_));
  const Intent& it = intent_;
  if (it.type == kIntentNone) return;
  static constexpr const char* kNames[] = {"",           "clone",    "punch",
                                           "zero range", "collapse", "insert"};
  auto regular = [&](uint64_t ino) {
    return ino > 0 && ino < info_.size() && S_ISREG(InodeAt(ino)->mode);
  };
  const bool known = it.type <= kIntentInsert;
  if (!known || !regular(it.ino) || (it.type == kIntentClone && !regular(it.src_ino))) {
    Note("inode 0", "a pending block-map change (intent type " + std::to_string(it.type) +
                        ") that names no regular file to change; the next mount discards it");
    return;
  }
  intent_pending_ = true;
  const std::string range = it.count == 0 ? "no blocks at block " + std::to_string(it.first_block)
                                          : "blocks " + std::to_string(it.first_block) + "-" +
                                                std::to_string(it.first_block + it.count - 1);
  std::string what = "a pending " + std::string(kNames[it.type]) + " of " + range + " of inode " +
                     std::to_string(it.ino);
  if (it.type == kIntentClone)
    what +=
        " from block " + std::to_string(it.src_block) + " of inode " + std::to_string(it.src_ino);
  Note("inode 0", what + " (a crash interrupted it); the next mount finishes it");
}

bool Checker::IntentUses(uint64_t ino) const {
  return intent_pending_ &&
         (intent_.ino == ino || (intent_.type == kIntentClone && intent_.src_ino == ino));
}

// The root must be a directory; anything else is replaced by an empty one, and
// the rest of the tree is then reattached under /lost+found.
void Checker::CheckRoot() {
  const uint32_t mode = InodeAt(kRootIno)->mode;
  const uint8_t type = TypeOfMode(mode);
  if (type == DT_DIR) return;
  if (mode == 0) {
    ReplaceRoot("the root directory is missing (free slot)", false);
  } else if (type == 0) {
    ReplaceRoot("the root has an unknown file type " + Octal(mode & S_IFMT), true);
  } else {
    ReplaceRoot(std::string("the root is a ") + TypeName(type) + ", not a directory", true);
  }
}

void Checker::ReplaceRoot(const std::string& what, bool lossy) {
  Problem("inode 1", what,
          "replaced it with an empty directory; the rest of the tree goes to /lost+found", lossy);
  Inode root{};
  root.mode = S_IFDIR | 0755;
  root.nlink = 2;
  root.atime_ns = root.mtime_ns = root.ctime_ns = root.btime_ns = now_ns_;
  root.parent = kRootIno;
  root.generation = InodeAt(kRootIno)->generation + 1;
  writer_->Put(InodeAt(kRootIno), root);
  InodeInfo& info = info_[kRootIno];
  info = InodeInfo{};
  info.type = DT_DIR;
  info.nlink = 2;
  info.parent = kRootIno;
  root_replaced_ = true;
}

void Checker::CheckInode(uint64_t ino) {
  InodeScan s;
  s.ino = ino;
  s.at = InodeAt(ino);
  std::memcpy(&s.in, s.at, sizeof(Inode));
  if (s.in.mode == 0) return;
  if (!CheckMode(s)) return;
  InodeInfo& info = info_[ino];
  info.type = TypeOfMode(s.in.mode);
  info.nlink = s.in.nlink;
  CheckFlags(s);
  CheckParentField(s);
  switch (info.type) {
    case DT_REG:
      CheckRegular(s);
      break;
    case DT_DIR:
      CheckDirectoryInode(s);
      break;
    case DT_LNK:
      if (!CheckSymlink(s)) return;
      break;
    default:
      CheckSpecial(s);
      break;
  }
  CheckXattr(s);
  RecordRefs(s);
}

bool Checker::CheckMode(InodeScan& s) {
  if (TypeOfMode(s.in.mode) == 0) {
    Problem(InodeWhere(s.ino), "unknown file type " + Octal(s.in.mode & S_IFMT),
            "cleared the inode", true);
    ZeroInodeSlot(s.ino);
    return false;
  }
  if (s.in.mode > 0xFFFF) {  // beyond S_IFMT | 07777
    Problem(InodeWhere(s.ino),
            "mode " + Octal(s.in.mode) + " has bits beyond the type and permissions",
            "cleared them");
    s.in.mode &= 0xFFFF;
    writer_->Put(&s.at->mode, s.in.mode);
  }
  return true;
}

void Checker::CheckFlags(InodeScan& s) {
  const uint8_t type = info_[s.ino].type;
  // Symlinks may keep their target inline; regular files and directories
  // may carry attribute flags (DIRSYNC only directories).
  const uint32_t allowed = type == DT_LNK   ? uint32_t{kInodeInlineData}
                           : type == DT_REG ? kRegularAttrFlags
                           : type == DT_DIR ? kDirAttrFlags
                                            : 0u;
  const uint32_t bad = s.in.flags & ~allowed;
  if (bad != 0) {
    Problem(InodeWhere(s.ino),
            bad == kInodeInlineData ? std::string("INLINE_DATA flag on a ") + TypeName(type)
            : (bad & ~kDirAttrFlags) == 0
                ? "attribute flags " + Hex(bad) + " on a " + TypeName(type)
                : "unknown flags " + Hex(bad),
            "cleared them");
    s.in.flags &= allowed;
    writer_->Put(&s.at->flags, s.in.flags);
  }
  if ((s.in.flags & kDirAttrFlags) != 0) CheckAttrFlagsFeature(s.ino);
}

void Checker::CheckAttrFlagsFeature(uint64_t ino) {
  if (sb_.feature_ro_compat & kRoCompatAttrFlags) return;
  // The engine sets the bit before the first flag; without it an older
  // leasefs would write the pool and ignore immutable files. Keeping the
  // flags and setting the bit loses nothing.
  Problem(InodeWhere(ino), "has attribute flags, but the superblock lacks the ATTR_FLAGS feature",
          "set the feature in both superblock copies");
  sb_ = engine::WithFeatures(sb_, kRoCompatAttrFlags, 0);
  if (opts_.repair) {
    engine::WriteSuperblockCopy(media_, kBackupSuperBlock, sb_);
    engine::WriteSuperblockCopy(media_, kSuperBlock, sb_);
  }
}

void Checker::CheckParentField(InodeScan& s) {
  InodeInfo& info = info_[s.ino];
  if (info.type == DT_DIR) {
    const bool ok = s.in.parent != 0 && s.in.parent < info_.size();
    info.parent = ok ? static_cast<uint32_t>(s.in.parent) : kNoIno;
    return;
  }
  if (s.in.parent == 0) return;
  Problem(InodeWhere(s.ino),
          "parent is " + std::to_string(s.in.parent) + " but only directories have one",
          "set it to 0");
  s.in.parent = 0;
  writer_->Put(&s.at->parent, uint64_t{0});
}

// ---------------------------------------------------------------------------
// Extents

void Checker::GatherExtents(InodeScan& s, bool inline_slots) {
  if (inline_slots) {
    for (uint32_t i = 0; i < kInlineExtents; ++i) {
      Extent e;
      std::memcpy(&e, s.in.inline_area + i * sizeof(Extent), sizeof(e));
      if (e.length != 0)
        s.extents.push_back({e, Offset(s.at) + kInlineOffset + i * sizeof(Extent)});
    }
  }
  WalkChain(s);
  ValidateExtents(s);
}

std::string Checker::ChainBlockProblem(uint64_t ino, uint64_t block) const {
  if (!InData(block, 1)) return "lies outside the data area";
  ExtentBlockHeader h;
  std::memcpy(&h, BlockPtr(block), sizeof(h));
  if (std::memcmp(h.magic, kExtentBlockMagic, sizeof(h.magic)) != 0) return "has a bad magic";
  if (h.owner_ino != ino) return "belongs to inode " + std::to_string(h.owner_ino);
  if (blocks_->claimed(block)) return "appears twice (the chain loops)";
  return "";
}

// Follows the chain from inode.extent_block, claiming each block; cuts it at
// the first bad link. Claims make the walk finite: no block is visited twice.
void Checker::WalkChain(InodeScan& s) {
  uint64_t link = s.in.extent_block;
  uint64_t link_loc = Offset(&s.at->extent_block);
  while (link != 0) {
    const std::string why = ChainBlockProblem(s.ino, link);
    if (!why.empty()) {
      Problem(InodeWhere(s.ino), "extent chain block " + std::to_string(link) + " " + why,
              "cut the chain there; the extents beyond it are lost", true);
      writer_->Put(reinterpret_cast<uint64_t*>(Ptr(link_loc)), uint64_t{0});
      s.dropped = true;
      return;
    }
    blocks_->Claim(link);
    s.meta.push_back({link, link_loc, 1, RefKind::kChain});
    auto* eb = reinterpret_cast<ExtentBlock*>(BlockPtr(link));
    for (uint32_t i = 0; i < kExtentsPerBlock; ++i) {
      Extent e;
      std::memcpy(&e, &eb->slots[i], sizeof(e));
      if (e.length != 0) s.extents.push_back({e, Offset(&eb->slots[i])});
    }
    link_loc = Offset(&eb->header.next_block);
    link = Read<uint64_t>(link_loc);
  }
}

std::string Checker::ExtentProblem(const Extent& e) const {
  if (!InData(e.pool_block, e.length)) return "lies outside the data area";
  if (e.file_block > kMaxFileBlocks - e.length) return "lies beyond the largest file size";
  return "";
}

// Keeps the extents that are in bounds and do not overlap an earlier one (in
// file order), sorted by file block.
void Checker::ValidateExtents(InodeScan& s) {
  std::vector<Slot> ok;
  ok.reserve(s.extents.size());
  for (Slot& slot : s.extents) {
    if (slot.e.flags & ~kKnownExtentFlags) {
      Problem(
          InodeWhere(s.ino),
          DescribeExtent(slot.e) + " has unknown flags " + Hex(slot.e.flags & ~kKnownExtentFlags),
          "cleared them");
      slot.e.flags &= kKnownExtentFlags;
      writer_->Put(&reinterpret_cast<Extent*>(Ptr(slot.loc))->flags, slot.e.flags);
    }
    const std::string why = ExtentProblem(slot.e);
    if (why.empty()) {
      ok.push_back(slot);
    } else {
      DropSlot(s, slot, why);
    }
  }
  std::sort(ok.begin(), ok.end(), [](const Slot& a, const Slot& b) {
    return a.e.file_block != b.e.file_block ? a.e.file_block < b.e.file_block : a.loc < b.loc;
  });
  s.extents.clear();
  uint64_t end = 0;
  for (const Slot& slot : ok) {
    if (!s.extents.empty() && slot.e.file_block < end) {
      DropSlot(s, slot, "overlaps the file blocks of another extent");
      continue;
    }
    s.extents.push_back(slot);
    end = slot.e.file_block + slot.e.length;
  }
}

void Checker::DropSlot(InodeScan& s, const Slot& slot, const std::string& why) {
  Problem(InodeWhere(s.ino), DescribeExtent(slot.e) + " " + why,
          "cleared the extent; its data is lost", true);
  writer_->Zero(Ptr(slot.loc), sizeof(Extent));
  s.dropped = true;
}

// ---------------------------------------------------------------------------
// Per type

void Checker::CheckRegular(InodeScan& s) {
  GatherExtents(s, true);
  if (s.in.size <= kMaxFileSize) return;
  uint64_t end = 0;
  for (const Slot& slot : s.extents) end = std::max(end, slot.e.file_block + slot.e.length);
  Problem(InodeWhere(s.ino), "size " + std::to_string(s.in.size) + " is larger than 2^60",
          "set it to " + std::to_string(end * kBlockSize) + ", the end of its last extent");
  s.in.size = end * kBlockSize;
  writer_->Put(&s.at->size, s.in.size);
}

// A directory's extents must map exactly file blocks [0, n), written, and
// each block must carry a header naming the directory and the block's index.
// The first block that breaks this ends the directory.
void Checker::CheckDirectoryInode(InodeScan& s) {
  GatherExtents(s, true);
  if (!TileDirectory(s)) ClaimDirectoryBlocks(s);
  uint64_t bytes = 0;
  for (const Slot& slot : s.extents) bytes += uint64_t{slot.e.length} * kBlockSize;
  if (s.in.size == bytes) return;
  Problem(InodeWhere(s.ino),
          "size " + std::to_string(s.in.size) + " but its blocks hold " + std::to_string(bytes) +
              " bytes",
          "set it to " + std::to_string(bytes));
  s.in.size = bytes;
  writer_->Put(&s.at->size, bytes);
}

// Returns true if it truncated the directory.
bool Checker::TileDirectory(InodeScan& s) {
  uint64_t next = 0;
  for (const Slot& slot : s.extents) {
    if (slot.e.file_block != next) {
      TruncateDirectory(s, next, "directory has no block " + std::to_string(next));
      return true;
    }
    if (slot.e.flags & kExtentUnwritten) {
      TruncateDirectory(s, next, "directory block " + std::to_string(next) + " is unwritten");
      return true;
    }
    next += slot.e.length;
  }
  return false;
}

void Checker::ClaimDirectoryBlocks(InodeScan& s) {
  uint64_t index = 0;
  for (const Slot& slot : s.extents) {
    for (uint32_t j = 0; j < slot.e.length; ++j, ++index) {
      const uint64_t block = slot.e.pool_block + j;
      std::string why = DirBlockHeaderProblem(s.ino, block);
      if (why.empty() && !blocks_->Claim(block)) why = "is already in use by other metadata";
      if (!why.empty()) {
        TruncateDirectory(s, index,
                          "directory block " + std::to_string(index) + " (pool block " +
                              std::to_string(block) + ") " + why);
        return;
      }
      s.claimed_dir_blocks.push_back(block);
      CheckDirBlockIndex(s.ino, index, block);
    }
  }
}

std::string Checker::DirBlockHeaderProblem(uint64_t ino, uint64_t block) const {
  DirBlockHeader h;
  std::memcpy(&h, BlockPtr(block), sizeof(h));
  if (std::memcmp(h.magic, kDirBlockMagic, sizeof(h.magic)) != 0) return "has a bad magic";
  if (h.owner_ino != ino) return "belongs to inode " + std::to_string(h.owner_ino);
  return "";
}

void Checker::CheckDirBlockIndex(uint64_t ino, uint64_t index, uint64_t block) {
  auto* h = reinterpret_cast<DirBlockHeader*>(BlockPtr(block));
  const uint64_t said = h->block_index;
  if (said == index) return;
  Problem(InodeWhere(ino),
          "directory block " + std::to_string(index) + " (pool block " + std::to_string(block) +
              ") says it is block " + std::to_string(said),
          "set it to " + std::to_string(index));
  writer_->Put(&h->block_index, index);
}

// Keeps file blocks [0, keep) of the directory and drops the rest.
void Checker::TruncateDirectory(InodeScan& s, uint64_t keep, const std::string& why) {
  Problem(InodeWhere(s.ino), why,
          "truncated the directory to " + std::to_string(keep) +
              " blocks; entries in later blocks are lost",
          true);
  std::vector<Slot> kept;
  for (Slot& slot : s.extents) {
    if (slot.e.file_block >= keep) {
      writer_->Zero(Ptr(slot.loc), sizeof(Extent));
      continue;
    }
    if (slot.e.file_block + slot.e.length > keep) {
      slot.e.length = static_cast<uint32_t>(keep - slot.e.file_block);
      writer_->Put(&reinterpret_cast<Extent*>(Ptr(slot.loc))->length, slot.e.length);
    }
    kept.push_back(slot);
  }
  s.extents = std::move(kept);
  s.dropped = true;
  s.in.size = keep * kBlockSize;
  writer_->Put(&s.at->size, s.in.size);
}

// Returns false if the symlink was cleared.
bool Checker::CheckSymlink(InodeScan& s) {
  const uint64_t size = s.in.size;
  const std::string target = "symlink target of " + std::to_string(size) + " bytes";
  if (size == 0 || size > kMaxSymlink) {
    ClearScannedInode(s, target + " (must be 1 to 4095)");
    return false;
  }
  const bool is_inline = s.in.flags & kInodeInlineData;
  if (size <= kInodeInlineBytes) {
    if (!is_inline) {
      ClearScannedInode(s, target + " is not stored inline");
      return false;
    }
    if (s.in.extent_block != 0) {
      Problem(InodeWhere(s.ino), "inline symlink has an extent chain", "dropped the chain");
      s.in.extent_block = 0;
      writer_->Put(&s.at->extent_block, uint64_t{0});
    }
    return true;
  }
  if (is_inline) {
    ClearScannedInode(s, target + " is marked inline (at most 144 fit)");
    return false;
  }
  GatherExtents(s, true);
  const Extent* e = s.extents.size() == 1 ? &s.extents[0].e : nullptr;
  if (e == nullptr || e->file_block != 0 || e->length != 1 || (e->flags & kExtentUnwritten)) {
    ClearScannedInode(s, target + " is not in one written block at file block 0");
    return false;
  }
  return true;
}

void Checker::CheckSpecial(InodeScan& s) {
  const char* type = TypeName(info_[s.ino].type);
  if (s.in.size != 0) {
    Problem(InodeWhere(s.ino), std::string("a ") + type + " with size " + std::to_string(s.in.size),
            "set it to 0");
    s.in.size = 0;
    writer_->Put(&s.at->size, uint64_t{0});
  }
  bool mapped = s.in.extent_block != 0;
  for (uint32_t i = 0; i < kInlineExtents; ++i) {
    Extent e;
    std::memcpy(&e, s.in.inline_area + i * sizeof(Extent), sizeof(e));
    mapped |= e.length != 0;
  }
  if (!mapped) return;
  Problem(InodeWhere(s.ino), std::string("a ") + type + " with extents", "dropped them");
  std::memset(s.in.inline_area, 0, sizeof(s.in.inline_area));
  s.in.extent_block = 0;
  writer_->Zero(s.at->inline_area, sizeof(s.at->inline_area));
  writer_->Put(&s.at->extent_block, uint64_t{0});
  s.dropped = true;
}

// ---------------------------------------------------------------------------
// Recording, clearing

void Checker::RecordRefs(InodeScan& s) {
  InodeInfo& info = info_[s.ino];
  const RefKind kind = info.type == DT_DIR ? RefKind::kDir : RefKind::kData;
  for (const Ref& r : s.meta) {
    blocks_->Add(r.pool_block, r.length);
    refs_.push_back(r);
  }
  for (const Slot& slot : s.extents) {
    blocks_->Add(slot.e.pool_block, slot.e.length);
    refs_.push_back({slot.e.pool_block, slot.loc, slot.e.length, kind});
    info.blocks += slot.e.length;
  }
  if (s.in.blocks == info.blocks) return;
  // When extents were just dropped, the new count is part of that fix.
  if (!s.dropped)
    Problem(InodeWhere(s.ino),
            "blocks is " + std::to_string(s.in.blocks) + " but its extents map " +
                std::to_string(info.blocks),
            "set it to " + std::to_string(info.blocks));
  writer_->Put(&s.at->blocks, info.blocks);
}

void Checker::ClearScannedInode(InodeScan& s, const std::string& what) {
  Problem(InodeWhere(s.ino), what, "cleared the inode", true);
  for (const Ref& r : s.meta)
    for (uint32_t j = 0; j < r.length; ++j) blocks_->Unclaim(r.pool_block + j);
  for (uint64_t b : s.claimed_dir_blocks) blocks_->Unclaim(b);
  ZeroInodeSlot(s.ino);
  info_[s.ino] = InodeInfo{};
}

// Frees the slot. A free slot keeps its generation.
void Checker::ZeroInodeSlot(uint64_t ino) {
  Inode zero{};
  zero.generation = InodeAt(ino)->generation;
  writer_->Put(InodeAt(ino), zero);
}

// Frees an inode whose references have been recorded.
void Checker::ClearCountedInode(uint64_t ino) {
  for (Ref* r = RefsBegin(ino); r != RefsEnd(ino); ++r) {
    if (r->length == 0) continue;
    blocks_->Remove(r->pool_block, r->length);
    if (r->kind != RefKind::kData) {
      for (uint32_t j = 0; j < r->length; ++j) blocks_->Unclaim(r->pool_block + j);
    }
    r->length = 0;
  }
  ZeroInodeSlot(ino);
  info_[ino] = InodeInfo{};
}

// ---------------------------------------------------------------------------
// Metadata blocks that something else references too

// Claims make metadata blocks exclusive among metadata; a claimed block with
// more than one reference is therefore also mapped by a file extent. The
// metadata keeps the block (its header vouches for it); the other references
// go, and so do reach records that cover metadata.
void Checker::ResolveSharedMetadata() {
  DropRecordsOverMetadata();
  const std::vector<uint64_t> shared = blocks_->SharedMetadata();
  if (shared.empty()) return;
  // The first shared block in [block, block + length), or 0.
  auto first_shared = [&shared](uint64_t block, uint64_t length) -> uint64_t {
    auto it = std::lower_bound(shared.begin(), shared.end(), block);
    return it != shared.end() && *it - block < length ? *it : 0;
  };
  for (uint64_t ino = 1; ino < info_.size(); ++ino) {
    for (Ref* r = RefsBegin(ino); r != RefsEnd(ino) && info_[ino].type != 0; ++r) {
      if (r->kind != RefKind::kData || r->length == 0) continue;
      const uint64_t hit = first_shared(r->pool_block, r->length);
      if (hit != 0) DropDataRef(ino, *r, hit);
    }
  }
}

void Checker::DropDataRef(uint64_t ino, Ref& r, uint64_t shared_block) {
  const std::string where = InodeWhere(ino);
  const std::string block = std::to_string(shared_block);
  if (info_[ino].type == DT_LNK) {
    Problem(where, "symlink target block " + block + " also holds metadata", "cleared the inode",
            true);
    ClearCountedInode(ino);
    return;
  }
  Extent e;
  std::memcpy(&e, Ptr(r.loc), sizeof(e));
  Problem(where, DescribeExtent(e) + " maps block " + block + ", which holds metadata",
          "cleared the extent; its data is lost", true);
  writer_->Zero(Ptr(r.loc), sizeof(Extent));
  blocks_->Remove(r.pool_block, r.length);
  info_[ino].blocks -= r.length;
  writer_->Put(&InodeAt(ino)->blocks, info_[ino].blocks);
  r.length = 0;
}

}  // namespace leasefs::check::internal
