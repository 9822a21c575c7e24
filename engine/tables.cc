// The lazily initialized inode and refcount tables of a version-3 pool: the
// marks, raising them, and the upgrade that gives an older pool its marks
// (docs/pool_format.md "Lazily initialized tables").
//
// Raising a mark is no transaction. The slots or refcount blocks it will
// cover are zeroed and made durable first, and only then is the larger
// mark stored, one 8-byte store per copy, and made durable. A crash at any
// point leaves a consistent pool: a mark that did not rise leaves some
// zeroed space unused, and one that rose lies over zeroed space, which reads
// as free inodes and free blocks, just as what lay beyond it did.
#include <algorithm>

#include "engine/filesystem_impl.h"

namespace leasefs::engine {

using namespace layout;

namespace {

constexpr uint64_t DivRoundUp(uint64_t a, uint64_t b) { return (a + b - 1) / b; }

// Slots a raise of the inode mark adds: a quarter of those there are, so
// that the raises of a growing pool cost a constant share of its creates,
// at least 4 blocks of them and at most 4096 (16 MiB zeroed at once).
uint64_t InodeStep(uint64_t mark) {
  const uint64_t step = std::clamp<uint64_t>(mark / 4, 4 * kInodesPerBlock, 65536);
  return DivRoundUp(step, kInodesPerBlock) * kInodesPerBlock;
}

// Refcount blocks a raise of the refcount mark adds at least: a quarter of
// those there are, 4 (the refcounts of 16 MiB of data) to 4096 (16 GiB).
uint64_t RefcountStep(uint64_t mark) { return std::clamp<uint64_t>(mark / 4, 4, 4096); }

}  // namespace

Status Filesystem::Impl::LoadMarks() {
  const Superblock& sb = *pool_.sb;
  if (sb.version < kFormatVersion) {
    // Older pools initialized both tables whole at mkfs.
    marks_ = WholeTables(sb);
    return Status::Ok();
  }
  const MarkCopies copies = ReadMarkCopies(media_->base(), sb);
  const std::optional<uint64_t> inodes = copies.inode_mark();
  const std::optional<uint64_t> refcounts = copies.refcount_mark();
  if (!inodes || !refcounts)
    return Status::Corruption(std::string("superblock: the ") +
                              (!inodes ? "inode table's" : "refcount table's") +
                              " mark is damaged in both copies: run fsck.leasefs -y");
  marks_ = Marks{*inodes, *refcounts};
  return Status::Ok();
}

uint64_t Filesystem::Impl::CoveredEnd() const {
  const Superblock& sb = *pool_.sb;
  return sb.data_start + CoveredDataBlocks(sb, marks_.refcount_blocks);
}

Status Filesystem::Impl::GrowInodeTable() {
  const Superblock& sb = *pool_.sb;
  const uint64_t old = marks_.inodes;
  if (old >= sb.inode_count) return Status::Error(ENOSPC, "no free inodes");
  const uint64_t next = std::min(sb.inode_count, old + InodeStep(old));
  media_->SetFlush(I(old), 0, (next - old) * sizeof(Inode));
  media_->Drain();
  Marks m = marks_;
  m.inodes = next;
  StoreMarks(*media_, sb, m);
  marks_ = m;
  nodes_.resize(next);
  for (Ino ino = old; ino < next; ++ino) free_inodes_.insert(free_inodes_.end(), ino);
  return Status::Ok();
}

void Filesystem::Impl::CoverRefcounts(uint64_t end) {
  if (end <= CoveredEnd()) return;
  const Superblock& sb = *pool_.sb;
  const uint64_t old = marks_.refcount_blocks;
  const uint64_t need = DivRoundUp(end - sb.data_start, kRefcountsPerBlock);
  const uint64_t next = std::min(sb.refcount_blocks, std::max(need, old + RefcountStep(old)));
  media_->SetFlush(pool_.BlockPtr(sb.refcount_start + old), 0, (next - old) * kBlockSize);
  media_->Drain();
  Marks m = marks_;
  m.refcount_blocks = next;
  StoreMarks(*media_, sb, m);
  marks_ = m;
}

void Filesystem::Impl::UpgradeFormat() {
  const Superblock& sb = *pool_.sb;
  // The marks go just past what was ever used: the highest slot that holds
  // an inode or has held one (its generation is not 0; a slot never
  // allocated is all zero, as mkfs left it), and the highest block with a
  // reference. Everything past them is zero already, so a later raise,
  // which zeroes it again, changes nothing, and no slot whose generation
  // was handed out is ever zeroed (docs/handles.md).
  uint64_t top_slot = kRootIno;
  for (Ino ino = marks_.inodes; ino-- > kRootIno;) {
    if (I(ino)->mode != 0 || I(ino)->generation != 0) {
      top_slot = ino;
      break;
    }
  }
  const uint32_t* rc = pool_.refcount(sb.data_start);
  uint64_t used = CoveredEnd() - sb.data_start;
  while (used > 0 && rc[used - 1] == 0) --used;
  Marks m;
  m.inodes = std::max(DivRoundUp(top_slot + 1, kInodesPerBlock) * kInodesPerBlock,
                      std::min(kDefaultInitInodes, sb.inode_count));
  m.refcount_blocks = std::max(DivRoundUp(used, kRefcountsPerBlock),
                               std::min(kDefaultInitRefcountBlocks, sb.refcount_blocks));
  // The marks first, in both copies: an older leasefs and this one's
  // reading of a version-2 pool ignore them, so a crash before the version
  // changes leaves an older pool that the next mount upgrades again.
  StoreMarks(*media_, sb, m);
  // Only the version and the checksum change. The backup goes first: a crash
  // before the primary's drain leaves a valid older primary, which the next
  // mount upgrades again, or a primary torn between the two words, which
  // Load restores from the backup (IsTornUpgrade). fsck accepts both.
  const Superblock now = Upgraded(sb);
  WriteSuperblockCopy(*media_, kBackupSuperBlock, now);
  WriteSuperblockCopy(*media_, kSuperBlock, now);
  // Nothing is allocated past the new marks: the slots there are free and
  // so are the blocks, which the allocator holds as free already.
  marks_ = m;
  nodes_.resize(m.inodes);
  free_inodes_.erase(free_inodes_.lower_bound(m.inodes), free_inodes_.end());
}

Marks Filesystem::TableMarks() const {
  ReaderLock l(&impl_->mu_);
  return impl_->marks_;
}

}  // namespace leasefs::engine
