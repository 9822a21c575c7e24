// Checker: one run of the consistency checker over one pool. Internal to
// engine/check; the public entry point is CheckPool (check.h).
//
// The run is a fixed sequence of phases (see Run()). Each phase reads the pool
// only for what it validates first; what earlier phases decided lives in the
// model below (InodeInfo, the reference lists, BlockRefs). A check and a
// repair run make the same decisions and update the model the same way, so
// they report the same findings; the repair run also hands each fix to the
// Writer. Nothing reads back from the pool what the run itself may have
// written, except where a phase boundary has committed it.
#pragma once

#include <cstdint>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_set>
#include <utility>
#include <vector>

#include "base/status.h"
#include "engine/check/block_refs.h"
#include "engine/check/check.h"
#include "engine/check/writer.h"
#include "engine/journal.h"
#include "engine/layout.h"
#include "engine/media.h"
#include "engine/superblock.h"

namespace leasefs::check::internal {

inline constexpr uint32_t kNoIno = UINT32_MAX;

// What the checker knows about one inode slot. Inode numbers fit 32 bits:
// the superblock check refuses larger inode tables.
struct InodeInfo {
  uint8_t type = 0;       // d_type (DT_REG, DT_DIR, ...); 0 = free slot
  bool orphan = false;    // nlink 0, named by nothing, empty; kept (check run)
  bool detached = false;  // disconnected and could not be reattached
  uint32_t nlink = 0;     // as on the pool, updated by the run's own changes
  uint32_t links = 0;     // kept entries naming it (a directory: 0 or 1)
  uint32_t subdirs = 0;   // directories: kept entries naming directories
  uint32_t entries = 0;   // directories: kept entries inside it
  uint32_t parent = 0;    // directories: the parent field (kNoIno if out of range)
  uint32_t named_in = 0;  // directories: the directory holding the kept entry
  uint32_t kept_ref = 0;  // directories: index into dir_refs_ of that entry
  uint64_t blocks = 0;    // sum of the lengths of its valid extents
};

// Kinds of reference an inode holds on data blocks.
enum class RefKind : uint8_t {
  kData,   // an extent of a regular file or symlink
  kDir,    // an extent of a directory (its blocks are claimed metadata)
  kChain,  // an extent chain link (inode.extent_block or a next_block)
  kXattr,  // inode.xattr_block, a leaf's next_block, an xattr value run
};

// One valid reference and where the pool stores it.
struct Ref {
  uint64_t pool_block;
  uint64_t loc;     // pool offset of the Extent slot, or of the link field
  uint32_t length;  // blocks; 0 once dropped
  RefKind kind;
};

// A kept directory entry that names a directory.
struct DirRef {
  uint64_t loc;  // pool offset of the entry
  uint32_t dir;  // the directory holding it
  uint32_t target;
};

// A valid reach record (version 2).
struct QuarantineRef {
  uint64_t pool_block;
  uint64_t loc;
  uint32_t length;  // 0 once dropped
  uint32_t index;
};

// An extent slot in use and where it lives.
struct Slot {
  layout::Extent e;
  uint64_t loc;
};

// One inode under examination in phase "inodes".
struct InodeScan {
  uint64_t ino = 0;
  layout::Inode in{};           // copy of the slot, updated as fixes are made
  layout::Inode* at = nullptr;  // the slot on the pool
  std::vector<Slot> extents;    // valid extents, sorted by file block
  std::vector<Ref> meta;        // claimed chain links, xattr blocks and value runs
  std::vector<uint64_t> claimed_dir_blocks;
  bool dropped = false;  // some extent was dropped (and reported)
};

// A directory that repair appends entries to (/lost+found, or the root).
struct Appender {
  uint64_t dir = 0;
  std::vector<uint64_t> blocks;  // pool blocks in file order
  size_t fresh_from = SIZE_MAX;  // blocks from here on were allocated by this run
  size_t block = 0;              // scan position: block index and slot
  uint32_t slot = 1;
  Slot last{};              // the extent mapping the last block
  uint64_t chain_head = 0;  // inode.extent_block
  std::vector<uint64_t> chain_blocks;
  size_t fresh_chain_from = SIZE_MAX;  // chain blocks from here on are this run's
  size_t chain_pos = 0;                // free-slot search cursor in the chain
  uint32_t chain_slot = 0;
  bool fresh_inode = false;  // the inode was created by this run
  uint8_t inline_used = 0;   // inline extent slots filled by this run
};

// What one run tells the next about the inode mark of a version-3 pool:
// a directory names a live inode past it, so the mark is too low (damaged)
// and the next run reads the table up to `inodes` slots. Only raised.
struct MarkFloor {
  uint64_t inodes = 0;  // slots; 0: no floor
  uint64_t ino = 0;     // the highest such inode ...
  std::string named;    // ... and what names it ("entry 'a' (block 0, slot 1) of inode 12")
};

class Checker {
 public:
  Checker(engine::Media& media, const CheckOptions& opts, CheckReport* report, MarkFloor* floor);
  Checker(const Checker&) = delete;
  Checker& operator=(const Checker&) = delete;

  // Runs every phase. Errors: as CheckPool.
  Status Run();
  // The run stopped after its directory phase because a directory names a
  // live inode past the inode mark: run again, with the floor it raised.
  bool needs_rerun() const noexcept { return rerun_; }
  // How many of the report's findings were made before the marks were read.
  size_t early_findings() const noexcept { return early_findings_; }

 private:
  enum class LostFound { kUnknown, kReady, kFailed };

  // --- findings (check.cc)
  // Records a problem whose fix the caller then hands to writer_ (which
  // ignores it unless repairing); the model is updated either way.
  void Problem(std::string where, std::string what, std::string fix, bool lossy = false);
  // Records a problem this run cannot fix.
  void Unfixable(std::string where, std::string what);
  void Note(std::string where, std::string what);
  void Add(Finding f);
  // Item `done` of `total` of `phase` is reached: tells opts_.progress every
  // kProgressStep items and at the end.
  void Progress(const char* phase, uint64_t done, uint64_t total) const {
    if (opts_.progress && (done % kProgressStep == 0 || done == total))
      opts_.progress(phase, done, total);
  }

  // --- superblock, journal, summary (check.cc)
  Status CheckSuperblock(bool* usable);
  Status PickSuperblock(const layout::Superblock& primary, const layout::Superblock& backup,
                        bool* usable);
  void CheckBackup(const layout::Superblock& primary, const Status& backup_status);
  void CheckState();
  void DescribeGeometry();
  void DescribeMarks();
  void CheckJournal();
  void Summarize();

  // --- the marks of version 3 (marks.cc)
  // Reads both copies of each mark, reports a damaged copy, and sets marks_:
  // the larger valid copy, raised to the floor an earlier run found.
  void CheckMarks();
  void CheckMarkCopies(const char* table, const std::optional<uint64_t> (&copies)[2],
                       uint64_t* mark, uint64_t fallback);
  // After the inode phase: raises the refcount mark over every block
  // referenced past it (a damaged mark, or a damaged reference; fsck keeps
  // the data either way and rewrites the refcounts it then covers).
  void CheckRefcountMark();
  // A directory entry naming inode h.ino past the inode mark: true (and the
  // floor raised for the next run) when the slot holds an inode the entry
  // may name, so that the mark, not the entry, is wrong.
  bool LiveBeyondMark(uint64_t dir, const std::string& entry, const layout::DirEntryHeader& h);
  // A free inode slot past the initialized ones for a repair (/lost+found):
  // raises the inode mark by a block of slots, zeroed through the journal.
  // 0 if the whole table is initialized. Grows info_ and ref_begin_: no
  // reference into them may be held across it.
  uint64_t GrowInodeTable();
  // Raises the refcount mark by one refcount block (zeroed through the
  // journal) for a repair that needs a block. False if the table is whole.
  bool GrowRefcounts();
  // With repair: stores the marks this run settled on, if a copy differs.
  void StoreMarks();
  uint64_t CoveredEnd() const {
    return sb_.data_start + engine::CoveredDataBlocks(sb_, marks_.refcount_blocks);
  }

  // --- inodes, extents, xattrs (inodes.cc)
  void CheckInodes();
  void CheckSlotZero();
  void NoteIntent();
  // True if the pending intent changes or reads inode `ino`.
  bool IntentUses(uint64_t ino) const;
  void CheckRoot();
  void ReplaceRoot(const std::string& what, bool lossy);
  void CheckInode(uint64_t ino);
  bool CheckMode(InodeScan& s);
  void CheckFlags(InodeScan& s);
  // An inode with attribute flags needs kRoCompatAttrFlags (set once).
  void CheckAttrFlagsFeature(uint64_t ino);
  void CheckParentField(InodeScan& s);
  void GatherExtents(InodeScan& s, bool inline_slots);
  std::string ChainBlockProblem(uint64_t ino, uint64_t block) const;
  void WalkChain(InodeScan& s);
  std::string ExtentProblem(const layout::Extent& e) const;
  void ValidateExtents(InodeScan& s);
  void DropSlot(InodeScan& s, const Slot& slot, const std::string& why);
  void CheckRegular(InodeScan& s);
  void CheckDirectoryInode(InodeScan& s);
  bool TileDirectory(InodeScan& s);
  void ClaimDirectoryBlocks(InodeScan& s);
  std::string DirBlockHeaderProblem(uint64_t ino, uint64_t block) const;
  void CheckDirBlockIndex(uint64_t ino, uint64_t index, uint64_t block);
  void TruncateDirectory(InodeScan& s, uint64_t keep, const std::string& why);
  bool CheckSymlink(InodeScan& s);
  void CheckSpecial(InodeScan& s);
  // --- extended attributes (xattrs.cc)
  void CheckXattr(InodeScan& s);
  std::string XattrProblem(uint64_t ino, uint64_t block) const;
  std::string XattrLeafProblem(uint64_t ino, uint64_t leaf) const;
  void CheckXattrLeaves(InodeScan& s);
  uint32_t CheckXattrEntry(InodeScan& s, uint64_t leaf, uint32_t slot,
                           std::unordered_set<std::string>* names);
  std::string XattrRunsProblem(const std::vector<layout::XattrRun>& runs,
                               uint32_t value_len) const;
  std::string XattrValueOf(const layout::XattrLeafEntry& e, const char* entry,
                           const std::vector<layout::XattrRun>& runs) const;
  bool ClaimRuns(const std::vector<layout::XattrRun>& runs);
  void NeedIncompat(uint64_t bit, const char* what);
  void RecordRefs(InodeScan& s);
  void ClearScannedInode(InodeScan& s, const std::string& what);
  void ZeroInodeSlot(uint64_t ino);
  void ClearCountedInode(uint64_t ino);
  void ResolveSharedMetadata();
  void DropDataRef(uint64_t ino, Ref& r, uint64_t shared_block);

  // --- directories (dirs.cc)
  void CheckDirectories();
  void CheckDirBlock(uint64_t dir, uint64_t index, uint64_t pool_block,
                     std::unordered_set<std::string_view>* names);
  std::string EntryShapeProblem(const layout::DirEntryHeader& h, uint32_t slot) const;
  void CheckEntry(uint64_t dir, uint64_t loc, const std::string& entry,
                  const layout::DirEntryHeader& h, std::string_view name,
                  std::unordered_set<std::string_view>* names);
  bool CheckEntryTarget(uint64_t dir, uint64_t loc, const std::string& entry,
                        const layout::DirEntryHeader& h);
  void ZeroEntry(uint64_t loc);
  std::string EntryName(uint64_t loc) const;
  void ResolveDirectoryNames();
  void KeepOrDropDirRef(size_t i);
  void CheckParentFields();

  // --- the namespace as a whole (namespace.cc)
  void HandleOrphans();
  void CheckConnectivity();
  std::vector<std::pair<uint64_t, std::string>> FindDisconnected();
  void Reattach(uint64_t ino, const std::string& what);
  void LeaveOldEntry(uint64_t ino);
  bool EnsureLostFound(std::string* why);
  bool CreateLostFound(std::string* why);
  void WriteLostFound(uint64_t ino, uint64_t block);
  std::string LostFoundName(uint64_t ino);
  void InitAppender(Appender* a, uint64_t dir);
  bool AppendEntry(Appender* a, std::string_view name, uint64_t target, uint8_t type);
  void WriteEntry(uint64_t loc, std::string_view name, uint64_t target, uint8_t type);
  bool GrowDirectory(Appender* a);
  bool PlaceExtent(Appender* a, uint64_t block);
  uint64_t FreeExtentSlot(Appender* a);
  uint64_t AllocateBlock();
  void CheckLinkCounts();

  // --- quarantine and reference counts (refcounts.cc)
  void CheckQuarantine();
  void CheckQuarantineV1();
  std::string RecordProblem(const layout::QuarantineRecord& q) const;
  std::vector<std::pair<uint64_t, uint64_t>> CoveredRuns() const;
  void DropRecordsOverMetadata();
  void CountQuarantined();
  void CheckRefcounts();
  void ReportRefcountRun(uint64_t first, uint64_t count, uint32_t stored, uint32_t want,
                         bool expected);

  // --- pool access. Offsets and block numbers passed here are in bounds.
  char* Ptr(uint64_t pool_offset) const { return media_.base() + pool_offset; }
  char* BlockPtr(uint64_t block) const { return Ptr(block * layout::kBlockSize); }
  uint64_t Offset(const void* p) const {
    return static_cast<uint64_t>(static_cast<const char*>(p) - media_.base());
  }
  template <typename T>
  T Read(uint64_t pool_offset) const {
    T v;
    std::memcpy(&v, Ptr(pool_offset), sizeof(v));
    return v;
  }
  layout::Inode* InodeAt(uint64_t ino) const;
  uint32_t* RefcountAt(uint64_t pool_block) const;
  bool InData(uint64_t pool_block, uint64_t length) const {
    return blocks_->Contains(pool_block, length);
  }
  bool IsDir(uint64_t ino) const;
  // The refs recorded for `ino` in phase "inodes".
  Ref* RefsBegin(uint64_t ino) { return refs_.data() + ref_begin_[ino]; }
  Ref* RefsEnd(uint64_t ino) { return refs_.data() + ref_begin_[ino + 1]; }

  engine::Media& media_;
  const CheckOptions& opts_;
  CheckReport* report_;
  MarkFloor* floor_;
  const int64_t now_ns_;

  layout::Superblock sb_{};
  std::unique_ptr<engine::Journal> journal_;
  std::unique_ptr<Writer> writer_;
  std::unique_ptr<BlockRefs> blocks_;

  // The marks the run reads the tables by: info_ covers the inode slots
  // below marks_.inodes; blocks_ covers the data blocks below CoveredEnd()
  // (and any it finds referenced past it, which raises the mark).
  engine::Marks marks_{};
  bool inode_mark_lost_ = false;     // both copies damaged
  bool refcount_mark_lost_ = false;  // both copies damaged
  bool rerun_ = false;
  size_t early_findings_ = 0;
  // A superblock copy found invalid (and rewritten from the other): the
  // damage of its mark words is part of that finding.
  bool copy_damaged_[2] = {false, false};
  uint64_t fresh_slots_from_ = UINT64_MAX;  // GrowInodeTable: slots this run initializes

  std::vector<InodeInfo> info_;      // by inode number
  std::vector<Ref> refs_;            // grouped by inode, in inode order
  std::vector<uint64_t> ref_begin_;  // refs of ino: [ref_begin_[ino], ref_begin_[ino + 1])
  std::vector<QuarantineRef> quarantine_;
  std::vector<DirRef> dir_refs_;
  bool root_replaced_ = false;
  // The block-map change recorded in inode slot 0 (docs/pool_format.md
  // "Intents"), when one is pending and names existing regular files: the
  // next mount finishes it.
  layout::Intent intent_{};
  bool intent_pending_ = false;
  // References this run released by reclaiming orphans: [first, end) blocks.
  // Their refcounts drop without that being a problem.
  std::vector<std::pair<uint64_t, uint64_t>> released_;

  uint64_t lf_ino_ = 0;         // the directory the root's "lost+found" names
  uint64_t lf_entry_loc_ = 0;   // that entry
  uint64_t lf_name_owner_ = 0;  // a non-directory the root's "lost+found" names
  LostFound lf_state_ = LostFound::kUnknown;
  bool lf_virtual_ = false;  // check run: repair would create /lost+found
  std::string lf_why_;       // why there is no /lost+found (kFailed)
  std::unordered_set<std::string> lf_names_;
  Appender lf_append_;
  uint64_t alloc_hint_ = 0;
};

}  // namespace leasefs::check::internal
