// The marks of a version-3 pool (docs/pool_format.md "Lazily initialized
// tables"): both copies of each, a mark too low for what the pool holds,
// and raising them for a repair.
//
// A mark too low hides what lies past it. Blocks referenced past the
// refcount mark are found in the inode phase (the checker follows every
// reference), so one run raises that mark. Inodes past the inode mark are
// found only through the directory entries that name them, and the inode
// phase is over by then: the run stops after its directory phase and the
// next run reads the table up to them (MarkFloor). Each run reads only
// what is initialized and what something names, never the whole table; a
// chain of directories past the mark takes one run per level.
#include <algorithm>
#include <cstring>

#include "engine/check/checker.h"
#include "engine/check/util.h"

namespace leasefs::check::internal {

using namespace layout;

namespace {

constexpr uint64_t DivRoundUp(uint64_t a, uint64_t b) { return (a + b - 1) / b; }

}  // namespace

void Checker::CheckMarks() {
  if (sb_.version < kFormatVersion) {
    // Older pools initialized both tables whole.
    marks_ = engine::WholeTables(sb_);
    return;
  }
  const engine::MarkCopies c = engine::ReadMarkCopies(media_.base(), sb_);
  CheckMarkCopies("inode table", c.inodes, &marks_.inodes, kInodesPerBlock);
  inode_mark_lost_ = !c.inode_mark();
  CheckMarkCopies("refcount table", c.refcount_blocks, &marks_.refcount_blocks, 1);
  refcount_mark_lost_ = !c.refcount_mark();
  if (floor_->inodes > marks_.inodes) {
    if (!inode_mark_lost_)
      Problem("superblock",
              "the inode table's mark (" + std::to_string(marks_.inodes) +
                  " slots) lies below inode " + std::to_string(floor_->ino) + ", named by " +
                  floor_->named,
              "raised it to " + std::to_string(floor_->inodes) + " slots");
    marks_.inodes = floor_->inodes;
  }
  if (inode_mark_lost_)
    Problem("superblock", "the inode table's mark is damaged in both copies",
            "set it to " + std::to_string(marks_.inodes) +
                " slots, past every inode the directories name");
}

// One mark: a copy whose check code fails (or whose value does not fit the
// geometry) is damage; two valid copies that differ are what a crash
// between the two stores of a raise leaves, and the larger holds.
void Checker::CheckMarkCopies(const char* table, const std::optional<uint64_t> (&copies)[2],
                              uint64_t* mark, uint64_t fallback) {
  static constexpr const char* kCopy[2] = {"primary", "backup"};
  const std::string name = std::string("the ") + table + "'s mark";
  if (!copies[0] && !copies[1]) {
    *mark = fallback;  // rebuilt from what the pool names (CheckMarks, CheckRefcountMark)
    return;
  }
  *mark = std::max(copies[0].value_or(0), copies[1].value_or(0));
  for (int i = 0; i < 2; ++i) {
    if (!copies[i] && !copy_damaged_[i])
      Problem("superblock", name + " in the " + kCopy[i] + " copy is damaged (its check fails)",
              "rewrote it from the other copy");
  }
  if (copies[0] && copies[1] && *copies[0] != *copies[1])
    Note("superblock", name + " is " + std::to_string(*copies[0]) + " in the primary copy and " +
                           std::to_string(*copies[1]) +
                           " in the backup: a raise was interrupted; the larger holds" +
                           (opts_.repair ? ", written to both" : ""));
}

void Checker::CheckRefcountMark() {
  uint64_t end = blocks_->referenced_end();
  for (const QuarantineRef& q : quarantine_)
    if (q.length) end = std::max(end, q.pool_block + q.length);
  const uint64_t covered = CoveredEnd();
  const uint64_t need = std::max<uint64_t>(DivRoundUp(end - sb_.data_start, kRefcountsPerBlock), 1);
  if (refcount_mark_lost_) {
    Problem("superblock", "the refcount table's mark is damaged in both copies",
            "set it to " + std::to_string(need) + " refcount blocks, past every block referenced");
  } else if (end <= covered) {
    return;
  } else {
    Problem("superblock",
            "block " + std::to_string(end - 1) +
                " is referenced but lies past the refcount table's mark (" +
                std::to_string(marks_.refcount_blocks) + " refcount blocks: blocks " +
                std::to_string(sb_.data_start) + "-" + std::to_string(covered - 1) + ")",
            "raised it to " + std::to_string(need) +
                " refcount blocks; the refcounts it then covers are checked");
  }
  marks_.refcount_blocks = need;
  blocks_->Cover(CoveredEnd());
}

bool Checker::LiveBeyondMark(uint64_t dir, const std::string& entry, const DirEntryHeader& h) {
  if (sb_.version < kFormatVersion || h.ino >= sb_.inode_count) return false;
  const Inode& in = *InodeAt(h.ino);
  // What a slot never initialized is unlikely to hold by chance: the type
  // the entry says, a link, a generation, and a directory's parent.
  const uint8_t type = TypeOfMode(in.mode);
  if (type == 0 || type != h.type || in.nlink == 0 || in.generation == 0) return false;
  if (type == DT_DIR && in.parent != dir) return false;
  if (h.ino >= floor_->ino) {
    floor_->ino = h.ino;
    floor_->named = entry + " of " + InodeWhere(dir);
  }
  floor_->inodes =
      std::max(floor_->inodes, DivRoundUp(h.ino + 1, kInodesPerBlock) * kInodesPerBlock);
  rerun_ = true;
  return true;
}

uint64_t Checker::GrowInodeTable() {
  if (sb_.version < kFormatVersion || marks_.inodes >= sb_.inode_count) return 0;
  const uint64_t slot = marks_.inodes;
  writer_->Zero(InodeAt(slot), kInodesPerBlock * sizeof(Inode));
  fresh_slots_from_ = std::min(fresh_slots_from_, slot);
  marks_.inodes += kInodesPerBlock;
  info_.resize(marks_.inodes);
  ref_begin_.resize(marks_.inodes + 1, refs_.size());
  return slot;
}

bool Checker::GrowRefcounts() {
  if (sb_.version < kFormatVersion || marks_.refcount_blocks >= sb_.refcount_blocks) return false;
  writer_->Zero(BlockPtr(sb_.refcount_start + marks_.refcount_blocks), kBlockSize);
  ++marks_.refcount_blocks;
  blocks_->Cover(CoveredEnd());
  return true;
}

void Checker::StoreMarks() {
  if (!opts_.repair || sb_.version < kFormatVersion) return;
  const engine::MarkCopies c = engine::ReadMarkCopies(media_.base(), sb_);
  for (int i = 0; i < 2; ++i) {
    if (c.inodes[i] != marks_.inodes || c.refcount_blocks[i] != marks_.refcount_blocks) {
      // After every repair this run made is committed: what the marks now
      // cover is initialized.
      engine::StoreMarks(media_, sb_, marks_);
      return;
    }
  }
}

}  // namespace leasefs::check::internal
