// Block-map changes: every fallocate mode but preallocation, reflink
// (clone), copy_file_range, unshare, defrag, EXT4_IOC_MOVE_EXT, and the block
// map as LEASEFS_IOC_BMAP reports it. docs/block_map.md explains each.
//
// Atomicity: a change that fits one transaction is one transaction. Clone,
// punch, zero range, collapse and insert may not fit (a file can have any
// number of extents), so they run as an intent (layout::Intent in inode slot
// 0): the first transaction records the intent with the first piece of the
// change, each later one advances its cursor with the next piece, and a last
// one sets the size and times and clears it. A mount that finds an intent
// finishes it (RecoverIntent), so after a crash the change is whole. Unshare,
// defrag and move-extents never change what a file reads, so each of their
// pieces is simply a transaction of its own.
#include <fcntl.h>

#include <algorithm>
#include <cassert>
#include <cstring>

#include <linux/falloc.h>

#include "base/clock.h"
#include "leasefs/ioctl.h"
#include "engine/filesystem_impl.h"

namespace leasefs::engine {

using namespace layout;

namespace {

constexpr uint64_t kBlock = kBlockSize;

uint64_t RoundUp(uint64_t x) { return (x + kBlock - 1) & ~(kBlock - 1); }
uint64_t RoundDown(uint64_t x) { return x & ~(kBlock - 1); }
bool Aligned(uint64_t x) { return x % kBlock == 0; }

// Journal bytes one changed extent costs at most: its slot written (and maybe
// a split's second slot), refcount records at both ends of its range and the
// record headers.
constexpr size_t kMappingCost = 200;
constexpr size_t kRefRunCost = 24;
// Journal bytes kept back in every piece for attributes, the intent record,
// extent-chain links and the like.
constexpr size_t kSlack = 16384;

size_t Budget(const Op& op) { return op.room() > 2 * kSlack ? op.room() - kSlack : kSlack; }

// The end of the longest piece of [from, end) of `em` whose extents' journal
// records fit in `budget` bytes, counting the refcount runs of their pool
// blocks. At least one block.
uint64_t PieceEnd(const PoolView& pool, const ExtentMap& em, uint64_t from, uint64_t end,
                  size_t budget) {
  size_t used = 0;
  for (const Mapping& m : em.Overlapping(from, end - from)) {
    used += kMappingCost;
    if (used > budget) return std::max(from + 1, m.file_block);
    const uint32_t* rc = pool.refcount(m.pool_block);
    for (uint64_t i = 1; i < m.length; ++i) {
      if (rc[i] == rc[i - 1]) continue;
      used += kRefRunCost;
      if (used > budget) return std::max(from + 1, m.file_block + i);
    }
  }
  return end;
}

Intent* IntentSlot(const PoolView& pool) { return reinterpret_cast<Intent*>(pool.inode(0)); }

// A remap of bytes [off, off + len) of `ino` (block-aligned), for the layout
// guard, with the size it has now and the one it will have.
LayoutChange Remap(Ino ino, uint64_t off, uint64_t len, uint64_t old_size, uint64_t new_size) {
  LayoutChange ch;
  ch.ino = ino;
  ch.kind = LayoutChangeKind::kUnmap;
  ch.offset = off;
  ch.length = len;
  ch.size_changes = new_size != old_size;
  ch.old_size = old_size;
  ch.new_size = new_size;
  return ch;
}

// What fallocate `mode` of [off, off + len) of `ino` (now `size` bytes long)
// changes, for the layout guard: collapse and insert move every block from
// `off` on; the other modes change the range's blocks, and the size when
// they grow the file. Or the error the range earns from collapse or insert,
// checked here so that it comes before anything changes.
// REQUIRES: mode and the range checked as Fallocate checks them first.
Result<LayoutChange> FallocateChange(Ino ino, int mode, uint64_t off, uint64_t len,
                                     uint64_t size) {
  const uint64_t end = off + len;
  if (mode & (FALLOC_FL_COLLAPSE_RANGE | FALLOC_FL_INSERT_RANGE)) {
    if (!Aligned(off) || !Aligned(len))
      return Status::Error(EINVAL, "offset and length must be multiples of the block size");
    uint64_t new_size;
    if (mode & FALLOC_FL_COLLAPSE_RANGE) {
      if (end >= size) return Status::Error(EINVAL, "the range reaches the end of the file");
      new_size = size - len;
    } else {
      if (off >= size) return Status::Error(EINVAL, "offset at or past the end of the file");
      if (len > kMaxFileSize - size) return Status::Error(EFBIG);
      new_size = size + len;
    }
    return Remap(ino, off, LayoutChange::kToEnd, size, new_size);
  }
  // Punch hole always comes with KEEP_SIZE.
  const uint64_t new_size = (mode & FALLOC_FL_KEEP_SIZE) ? size : std::max(size, end);
  return Remap(ino, RoundDown(off), RoundUp(end) - RoundDown(off), size, new_size);
}

}  // namespace

// ---------------------------------------------------------------------------
// Intents

Filesystem::Impl::EdgeBlock Filesystem::Impl::MakeEdge(Ino ino, uint64_t fb, uint32_t from,
                                                        uint32_t to, const char* src) const {
  const char* old = nullptr;
  if (auto m = N(ino)->extents.Find(fb); m && !m->unwritten())
    old = pool_.BlockPtr(m->pool_block + (fb - m->file_block));
  // Bytes past the end of file read as zeros once the size grows over them.
  const uint64_t size = I(ino)->size;
  const uint64_t live = size > fb * kBlock ? std::min<uint64_t>(kBlock, size - fb * kBlock) : 0;
  Media* media = media_.get();
  return {fb, [=](char* blk) {
            if (old && live) media->CopyFlush(blk, old, live);
            if (!old || live < kBlock)
              media->SetFlush(blk + (old ? live : 0), 0, kBlock - (old ? live : 0));
            if (src) {
              media->CopyFlush(blk + from, src, to - from);
            } else {
              media->SetFlush(blk + from, 0, to - from);
            }
          }};
}

Status Filesystem::Impl::RunIntent(Intent it, const std::vector<EdgeBlock>& edges) {
  Intent* slot = IntentSlot(pool_);
  bool recorded = slot->type == it.type && slot->ino == it.ino;
  Node* n = N(it.ino);
  const uint64_t first = it.first_block, count = it.count;

  for (bool done = false, first_tx = true; !done; first_tx = false) {
    Op op(*this);
    const size_t budget = Budget(op);
    Inode img = *I(it.ino);
    std::vector<Mapping> removed;
    if (first_tx && !edges.empty()) {
      // Fresh blocks with the edges' new contents, made durable before the
      // transaction that maps them commits.
      // Nothing has changed yet: running out of space here fails the call.
      std::vector<BlockRange> got;
      LFS_RETURN_IF_ERROR(op.Reserve(edges.size(), 0, &got, Op::Use::kExtentChain));
      LFS_RETURN_IF_ERROR(PlanSlots(op, it.ino, 2 * edges.size()));
      std::vector<uint64_t> blocks;
      for (const BlockRange& g : got)
        for (uint64_t b = g.start; b < g.end(); ++b) blocks.push_back(b);
      for (size_t i = 0; i < edges.size(); ++i) edges[i].fill(pool_.BlockPtr(blocks[i]));
      media_->Drain();
      AddPlannedSlots(op, it.ino);
      for (size_t i = 0; i < edges.size(); ++i) {
        n->extents.Remove(op.tx, edges[i].file_block, 1, &removed);
        n->extents.Insert(op.tx, Mapping{edges[i].file_block, blocks[i], 1, 0});
        ++img.blocks;
      }
      for (const Mapping& m : removed) {
        op.AddRefs({m.pool_block, m.length}, -1);
        img.blocks -= m.length;
      }
      removed.clear();
      for (const BlockRange& g : got) op.Claim(g);
    }

    switch (it.type) {
      case kIntentClone: {
        // cursor: blocks of the range already mapped from the source.
        const uint64_t k = it.cursor;
        if (k >= count) {
          done = true;
          break;
        }
        const ExtentMap& src = N(it.src_ino)->extents;
        const uint64_t ke = std::min(
            PieceEnd(pool_, n->extents, first + k, first + count, budget / 2) - first,
            PieceEnd(pool_, src, it.src_block + k, it.src_block + count, budget / 2) -
                it.src_block);
        std::vector<Mapping> maps = src.Overlapping(it.src_block + k, ke - k);
        if (!PlanSlots(op, it.ino, maps.size() + ExtentMap::kSlotsPerRemove).ok()) {
          done = true;  // cannot happen: the caller checked the space
          break;
        }
        AddPlannedSlots(op, it.ino);
        n->extents.Remove(op.tx, first + k, ke - k, &removed);
        for (const Mapping& m : removed) {
          op.AddRefs({m.pool_block, m.length}, -1);
          img.blocks -= m.length;
        }
        for (Mapping m : maps) {
          if (m.unwritten()) continue;  // reads as zeros: a hole does too
          m.file_block = m.file_block - it.src_block + first;
          n->extents.Insert(op.tx, m);
          op.AddRefs({m.pool_block, m.length}, +1);
          img.blocks += m.length;
        }
        it.cursor = ke;
        break;
      }
      case kIntentPunch:
      case kIntentZero:
      case kIntentCollapse: {
        if (it.type != kIntentCollapse || it.phase == 0) {
          // cursor: blocks of the range already unmapped (or converted).
          const uint64_t k = it.cursor;
          if (k >= count) {
            if (it.type == kIntentCollapse) {
              it.phase = 1;
              it.cursor = first + count;  // from here on: the first unshifted block
              op.tx.Put(&slot->phase, it.phase);
              op.tx.Put(&slot->cursor, it.cursor);
              recorded = true;
              break;
            }
            done = true;
            break;
          }
          const uint64_t ke =
              PieceEnd(pool_, n->extents, first + k, first + count, budget) - first;
          if (!PlanSlots(op, it.ino, 3).ok()) {
            done = true;
            break;
          }
          AddPlannedSlots(op, it.ino);
          n->extents.Remove(op.tx, first + k, ke - k, &removed);
          for (const Mapping& m : removed) {
            const bool keep = it.type == kIntentZero &&
                              (m.unwritten() || !AnyShared(m.pool_block, m.length));
            if (keep) {  // zero range: the file keeps its own blocks, unwritten
              Mapping u = m;
              u.flags |= kExtentUnwritten;
              n->extents.Insert(op.tx, u);
              continue;
            }
            op.AddRefs({m.pool_block, m.length}, -1);
            img.blocks -= m.length;
          }
          it.cursor = ke;
          break;
        }
        // Collapse, phase 1: shift the extents at and after the cursor down
        // by `count`, lowest first, into the space the range left.
        std::vector<Mapping> next = n->extents.Overlapping(it.cursor, UINT64_MAX - it.cursor);
        if (next.empty()) {
          done = true;
          break;
        }
        const size_t take = std::max<size_t>(1, std::min(next.size(), budget / kMappingCost));
        if (!PlanSlots(op, it.ino, 2).ok()) {
          done = true;
          break;
        }
        AddPlannedSlots(op, it.ino);
        for (size_t i = 0; i < take; ++i) {
          Mapping m = next[i];
          n->extents.Remove(op.tx, m.file_block, m.length, &removed);
          m.file_block -= count;
          n->extents.Insert(op.tx, m);
          it.cursor = next[i].file_end();
        }
        break;
      }
      case kIntentInsert: {
        // cursor: the extents at and after cursor + count are shifted; those
        // below the cursor are not. Shift the highest first.
        std::vector<Mapping> below = n->extents.Overlapping(first, it.cursor - first);
        if (below.empty() || it.cursor <= first) {
          done = true;
          break;
        }
        const size_t take = std::max<size_t>(1, std::min(below.size(), budget / kMappingCost));
        if (!PlanSlots(op, it.ino, 2).ok()) {
          done = true;
          break;
        }
        AddPlannedSlots(op, it.ino);
        for (size_t i = 0; i < take; ++i) {
          Mapping m = below[below.size() - 1 - i];  // clipped to start at `first`
          n->extents.Remove(op.tx, m.file_block, m.length, &removed);
          it.cursor = m.file_block;
          m.file_block += count;
          n->extents.Insert(op.tx, m);
        }
        break;
      }
      default:
        done = true;
        break;
    }

    if (done) {
      // The last transaction: size, mode and times, and the record goes.
      img.size = it.new_size;
      img.mode = it.new_mode ? it.new_mode : img.mode;
      img.mtime_ns = img.ctime_ns = it.time_ns;
      StageAttrs(op, it.ino, img);
      if (recorded) op.tx.Put(slot, Intent{});
      op.Commit();
      return Status::Ok();
    }
    StageAttrs(op, it.ino, img);
    if (!recorded) {
      op.tx.Put(slot, it);
      recorded = true;
    } else {
      op.tx.Put(&slot->cursor, it.cursor);
    }
    op.Commit();
  }
  return Status::Ok();
}

void Filesystem::Impl::RecoverIntent() {
  const Intent it = *IntentSlot(pool_);
  if (it.type == kIntentNone) return;
  // A record that does not describe a change of existing files is dropped:
  // every piece already made left the files consistent.
  auto regular = [&](uint64_t ino) { return N(ino) && S_ISREG(I(ino)->mode); };
  const bool sane = it.type <= kIntentInsert && regular(it.ino) &&
                    (it.type != kIntentClone || regular(it.src_ino)) &&
                    it.new_size <= kMaxFileSize && it.count < kMaxFileSize / kBlock &&
                    it.first_block < kMaxFileSize / kBlock;
  if (!sane) {
    Op op(*this);
    op.tx.Put(IntentSlot(pool_), Intent{});
    op.Commit();
    return;
  }
  (void)RunIntent(it);  // no edges: cannot fail
}

// ---------------------------------------------------------------------------
// Unshare

Status Filesystem::Impl::Unshare(Ino ino, uint64_t fb, uint64_t count) {
  Node* n = N(ino);
  constexpr uint64_t kPiece = 4096;  // blocks copied per transaction at most
  for (;;) {
    // The first shared run in the range.
    std::optional<Mapping> run;
    for (const Mapping& m : n->extents.Overlapping(fb, count)) {
      if (m.unwritten()) continue;
      const uint32_t* rc = pool_.refcount(m.pool_block);
      uint64_t i = 0;
      while (i < m.length && rc[i] <= 1) ++i;
      if (i == m.length) continue;
      uint64_t j = i;
      while (j < m.length && j - i < kPiece && rc[j] > 1) ++j;
      run = Mapping{m.file_block + i, m.pool_block + i, j - i, m.flags};
      break;
    }
    if (!run) return Status::Ok();
    Op op(*this);
    std::vector<BlockRange> got;
    LFS_RETURN_IF_ERROR(op.Reserve(run->length, 0, &got));
    LFS_RETURN_IF_ERROR(PlanSlots(op, ino, got.size() + ExtentMap::kSlotsPerRemove));
    uint64_t at = 0;
    for (const BlockRange& g : got) {
      media_->CopyFlush(pool_.BlockPtr(g.start), pool_.BlockPtr(run->pool_block + at),
                        g.count * kBlock);
      at += g.count;
    }
    media_->Drain();
    AddPlannedSlots(op, ino);
    std::vector<Mapping> removed;
    n->extents.Remove(op.tx, run->file_block, run->length, &removed);
    op.AddRefs({run->pool_block, run->length}, -1);
    at = run->file_block;
    for (const BlockRange& g : got) {
      n->extents.Insert(op.tx, Mapping{at, g.start, g.count, 0});
      op.Claim(g);
      at += g.count;
    }
    op.Commit();
  }
}

// ---------------------------------------------------------------------------
// fallocate

Status Filesystem::Fallocate(const Cred& c, Ino ino, int mode, uint64_t off, uint64_t len) {
  Impl& fs = *impl_;
  WriterLock l(&fs.mu_);
  LFS_ASSIGN_OR_RETURN(Node * n, fs.Get(ino));
  if (fs.read_only_) return Status::Error(EROFS);
  if (n->dir) return Status::Error(EISDIR);
  if (!S_ISREG(fs.I(ino)->mode)) return Status::Error(ENODEV);
  // The rules of vfs_fallocate, which FUSE leaves to the daemon for modes it
  // does not pass on itself (our ioctls reach here too).
  constexpr int kKnown = FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE |
                         FALLOC_FL_COLLAPSE_RANGE | FALLOC_FL_INSERT_RANGE |
                         FALLOC_FL_UNSHARE_RANGE;
  if (mode & ~kKnown) return Status::Error(EOPNOTSUPP, "unknown fallocate mode");
  if ((mode & FALLOC_FL_PUNCH_HOLE) && (mode & FALLOC_FL_ZERO_RANGE))
    return Status::Error(EINVAL, "punch hole and zero range together");
  if ((mode & FALLOC_FL_PUNCH_HOLE) && !(mode & FALLOC_FL_KEEP_SIZE))
    return Status::Error(EOPNOTSUPP, "punch hole needs FALLOC_FL_KEEP_SIZE");
  if ((mode & (FALLOC_FL_COLLAPSE_RANGE | FALLOC_FL_INSERT_RANGE)) &&
      (mode & ~(FALLOC_FL_COLLAPSE_RANGE | FALLOC_FL_INSERT_RANGE)))
    return Status::Error(EINVAL, "collapse and insert take no other flag");
  if ((mode & FALLOC_FL_COLLAPSE_RANGE) && (mode & FALLOC_FL_INSERT_RANGE))
    return Status::Error(EINVAL);
  if ((mode & FALLOC_FL_UNSHARE_RANGE) && (mode & ~(FALLOC_FL_UNSHARE_RANGE | FALLOC_FL_KEEP_SIZE)))
    return Status::Error(EINVAL, "unshare takes only FALLOC_FL_KEEP_SIZE");
  // vfs_fallocate: an append-only file only preallocates.
  if ((mode & ~FALLOC_FL_KEEP_SIZE) && fs.AppendOnly(ino))
    return Status::Error(EPERM, "append-only: preallocation only");
  LFS_RETURN_IF_ERROR(fs.CheckMutable(ino));
  if (len == 0) return Status::Error(EINVAL);
  if (off > kMaxFileSize || len > kMaxFileSize - off) return Status::Error(EFBIG);
  const uint64_t size = fs.I(ino)->size, end = off + len;
  LFS_ASSIGN_OR_RETURN(const LayoutChange change, FallocateChange(ino, mode, off, len, size));
  LFS_RETURN_IF_ERROR(fs.GuardChange(c, change));
  // Every mode, even one that changes no byte (preallocation, unshare),
  // drops privileges, as ext4's and XFS's fallocate do (file_modified).
  fs.DropPrivs(c, ino);

  const uint64_t fb = off / kBlock;
  Intent it{};
  it.ino = ino;
  it.new_size = size;
  it.time_ns = NowNs();

  if ((mode & ~FALLOC_FL_KEEP_SIZE) == 0) {
    LFS_RETURN_IF_ERROR(fs.Preallocate(ino, mode, off, len));
    return Status::Ok();
  }

  if (mode & FALLOC_FL_UNSHARE_RANGE) {
    // Copy the shared blocks of the range (within the file), then
    // preallocate its holes: afterwards writes there need no new space.
    const uint64_t ue = std::min(end, RoundUp(size));
    if (off < ue) {
      uint64_t shared = 0;
      for (const Mapping& m : n->extents.Overlapping(fb, (ue - 1) / kBlock - fb + 1))
        if (!m.unwritten()) shared += fs.SharedBlocks(m.pool_block, m.length);
      if (shared > fs.AvailableBlocks()) return Status::Error(ENOSPC, "pool is full");
      LFS_RETURN_IF_ERROR(fs.Unshare(ino, fb, (ue - 1) / kBlock - fb + 1));
    }
    return fs.Preallocate(ino, mode & FALLOC_FL_KEEP_SIZE, off, len);
  }

  if (mode & (FALLOC_FL_COLLAPSE_RANGE | FALLOC_FL_INSERT_RANGE)) {
    // The range was checked with the change (FallocateChange).
    it.new_size = change.new_size;
    if (mode & FALLOC_FL_COLLAPSE_RANGE) {
      it.type = kIntentCollapse;
    } else {
      it.type = kIntentInsert;
      it.cursor = std::max(n->extents.end_block(), fb);
    }
    if (n->extents.ChainBlocksFor(4) > fs.alloc_.free_blocks())
      return Status::Error(ENOSPC, "pool is full");
    it.first_block = fb;
    it.count = len / kBlock;
    return fs.RunIntent(it);
  }

  // Punch hole and zero range: zero the partial blocks at the edges, then
  // unmap (punch) or turn unwritten (zero) the whole blocks between.
  const bool zero = mode & FALLOC_FL_ZERO_RANGE;
  const bool grow = zero && !(mode & FALLOC_FL_KEEP_SIZE) && end > size;
  const uint64_t wb = RoundUp(off), we = std::max(wb, RoundDown(end));
  if (zero) {
    // Zeroing may replace shared blocks with unwritten ones: check the space
    // first, so that a full pool changes nothing.
    uint64_t need = 0;
    if (we > wb) {
      uint64_t at = wb / kBlock;
      for (const Mapping& m : n->extents.Overlapping(wb / kBlock, (we - wb) / kBlock)) {
        need += m.file_block - at;  // a hole
        if (!m.unwritten()) need += fs.SharedBlocks(m.pool_block, m.length);
        at = m.file_end();
      }
      need += we / kBlock - at;
    }
    if (need > fs.AvailableBlocks()) return Status::Error(ENOSPC, "pool is full");
  }
  // Bytes past the end of file that growing exposes: nobody sees them yet,
  // so zeroing them in place is safe.
  if (grow) LFS_RETURN_IF_ERROR(fs.ZeroRange(ino, size, std::min(RoundUp(size), end)));
  if (grow) it.new_size = end;
  // The partial blocks at the edges get fresh copies with the range zeroed,
  // mapped in the same transaction that starts the change, so the whole
  // operation is atomic. (On a pool too full even for that, they are zeroed
  // in place first, as a write would be.)
  std::vector<Impl::EdgeBlock> edges;
  auto edge = [&](uint64_t a, uint64_t b) REQUIRES(fs.mu_) -> Status {
    if (a >= b) return Status::Ok();
    const uint64_t eb = a / kBlock;
    const auto m = n->extents.Find(eb);
    if (!m || m->unwritten()) return Status::Ok();  // reads as zeros already
    if (fs.alloc_.free_blocks() < edges.size() + 1) return fs.ZeroRange(ino, a, b);
    edges.push_back(fs.MakeEdge(ino, eb, static_cast<uint32_t>(a - eb * kBlock),
                                static_cast<uint32_t>(b - eb * kBlock)));
    return Status::Ok();
  };
  LFS_RETURN_IF_ERROR(edge(off, std::min(end, wb)));
  if (end > we) LFS_RETURN_IF_ERROR(edge(we, end));
  it.type = zero ? kIntentZero : kIntentPunch;
  it.first_block = wb / kBlock;
  it.count = (we - wb) / kBlock;
  LFS_RETURN_IF_ERROR(fs.RunIntent(it, edges));
  // Zero range leaves no holes: give them unwritten blocks (checked above).
  if (zero && we > wb)
    LFS_RETURN_IF_ERROR(fs.Preallocate(ino, FALLOC_FL_KEEP_SIZE, wb, we - wb));
  return Status::Ok();
}

// ---------------------------------------------------------------------------
// Clone and copy_file_range

Result<uint64_t> Filesystem::Impl::CloneLocked(const Cred& c, Ino src, uint64_t src_off, Ino dst,
                                               uint64_t dst_off, uint64_t len) {
  if (read_only_) return Status::Error(EROFS);
  LFS_ASSIGN_OR_RETURN(Node * sn, Get(src));
  LFS_ASSIGN_OR_RETURN(Node * dn, Get(dst));
  if (sn->dir || dn->dir) return Status::Error(EISDIR);
  if (!S_ISREG(I(src)->mode) || !S_ISREG(I(dst)->mode)) return Status::Error(EINVAL);
  LFS_RETURN_IF_ERROR(CheckRewritable(dst));  // generic_remap_file_range_prep
  const uint64_t src_size = I(src)->size, dst_size = I(dst)->size;
  if (src_off > src_size) return Status::Error(EINVAL, "source offset past its end of file");
  if (len == 0) len = src_size - src_off;
  if (len > src_size - src_off) return Status::Error(EINVAL, "source range past its end of file");
  if (len == 0) return uint64_t{0};
  if (!Aligned(src_off) || !Aligned(dst_off))
    return Status::Error(EINVAL, "offsets must be multiples of the block size");
  if (dst_off > kMaxFileSize || len > kMaxFileSize - dst_off) return Status::Error(EFBIG);
  if (!Aligned(len)) {
    // Only a range that ends at the source's end of file may end inside a
    // block, and only when it also covers the destination's end of file.
    if (src_off + len != src_size || dst_off + len < dst_size)
      return Status::Error(EINVAL, "length must be a multiple of the block size");
  }
  if (src == dst && src_off < dst_off + len && dst_off < src_off + len)
    return Status::Error(EINVAL, "ranges of one file overlap");
  const uint64_t nb = RoundUp(len) / kBlock;
  // A clone shares or fails; it cannot copy what must not be shared.
  if (SharesWritablyCovered(src, src_off / kBlock, nb))
    return Status::Error(ETXTBSY,
                         "a range mapped for writing through DAX cannot be shared; clone it once "
                         "the mapping is gone");
  const size_t maps = sn->extents.Overlapping(src_off / kBlock, nb).size();
  if (dn->extents.ChainBlocksFor(maps + 2) > alloc_.free_blocks())
    return Status::Error(ENOSPC, "pool is full");
  // Both files' layouts change: the source's blocks become shared.
  const uint64_t new_size = std::max(dst_size, dst_off + len);
  LFS_RETURN_IF_ERROR(GuardChange(c, Remap(src, src_off, nb * kBlock, src_size, src_size)));
  LFS_RETURN_IF_ERROR(GuardChange(c, Remap(dst, dst_off, nb * kBlock, dst_size, new_size)));
  DropPrivs(c, dst);  // as generic_remap_file_range_prep does
  // Bytes between the destination's end of file and the range read as zeros.
  if (dst_off > dst_size)
    LFS_RETURN_IF_ERROR(ZeroRange(dst, dst_size, std::min(RoundUp(dst_size), dst_off)));

  LFS_RETURN_IF_ERROR(RunClone(src, src_off / kBlock, dst, dst_off / kBlock, nb, new_size));
  return len;
}

Status Filesystem::Impl::RunClone(Ino src, uint64_t src_block, Ino dst, uint64_t dst_block,
                                  uint64_t count, uint64_t new_size,
                                  const std::vector<EdgeBlock>& edges) {
  Intent it{};
  it.type = kIntentClone;
  it.ino = dst;
  it.src_ino = src;
  it.src_block = src_block;
  it.first_block = dst_block;
  it.count = count;
  it.new_size = new_size;
  it.time_ns = NowNs();
  return RunIntent(it, edges);
}

Result<uint64_t> Filesystem::CloneRange(const Cred& c, Ino src, uint64_t src_off, Ino dst,
                                        uint64_t dst_off, uint64_t len) {
  WriterLock l(&impl_->mu_);
  return impl_->CloneLocked(c, src, src_off, dst, dst_off, len);
}

namespace {

// How copy_file_range moves its bytes; deciding changes nothing.
struct CopyPlan {
  // Offsets in the same place of their blocks, and room for the edges: the
  // whole blocks between are shared (`nb` of them, the `mid` bytes), the
  // partial ones at the edges (`head`, `tail` bytes) are copied into fresh
  // blocks, and all of it lands in one intent, atomically. Otherwise the
  // bytes are copied through the write path.
  bool clone = false;
  uint64_t head = 0, mid = 0, tail = 0, nb = 0;
};

CopyPlan PlanCopy(const Filesystem::Impl& fs, Ino src, uint64_t src_off, Ino dst, uint64_t dst_off,
                  uint64_t len) REQUIRES(fs.mu_) {
  CopyPlan p;
  if (src_off % kBlock != dst_off % kBlock) return p;
  p.head = std::min(len, (kBlock - src_off % kBlock) % kBlock);
  p.mid = RoundDown(len - p.head);
  p.tail = len - p.head - p.mid;
  // The last partial block may be shared too when it ends the source and
  // covers the destination's end (the clone rule at end of file).
  if (p.tail && src_off + len == fs.I(src)->size && dst_off + len >= fs.I(dst)->size) {
    p.mid += p.tail;
    p.tail = 0;
  }
  p.nb = RoundUp(p.mid) / kBlock;
  // Within one file an edge block may be a block the clone reads (the
  // source's last block is the destination's first): copy instead.
  auto clone_reads = [&](uint64_t dst_at) {
    const uint64_t b = dst_at / kBlock, first = (src_off + p.head) / kBlock;
    return src == dst && b >= first && b < first + p.nb;
  };
  const bool edges_clash = (p.head && clone_reads(dst_off)) ||
                           (p.tail && clone_reads(dst_off + p.head + p.mid));
  const size_t nedges = (p.head ? 1 : 0) + (p.tail ? 1 : 0);
  const size_t maps = fs.N(src)->extents.Overlapping((src_off + p.head) / kBlock, p.nb).size();
  // Blocks a writable DAX record covers are never shared (WritablyCovered):
  // then the whole range is copied, as the write path copies it.
  p.clone = !edges_clash &&
            fs.alloc_.free_blocks() >=
                nedges + fs.N(dst)->extents.ChainBlocksFor(maps + 2 + 2 * nedges) &&
            !fs.SharesWritablyCovered(src, (src_off + p.head) / kBlock, p.nb);
  return p;
}

// The changes a copy planned as `p` makes, for the layout guard. A copy by
// write is one write of the destination. A copy by clone changes the
// source's shared blocks and the destination's, as CloneRange reports
// them, and writes the edges; an edge always allocates, as it is written
// into a fresh block that replaces the destination's. The size change, if
// any, goes with the destination's last change, the one reaching the new
// end. REQUIRES: a lock.
std::vector<LayoutChange> CopyChanges(const Filesystem::Impl& fs, const CopyPlan& p, Ino src,
                                      uint64_t src_off, Ino dst, uint64_t dst_off, uint64_t len) {
  if (!p.clone) return {fs.WriteChange(dst, dst_off, len)};
  const uint64_t src_size = fs.I(src)->size, dst_size = fs.I(dst)->size;
  auto edge = [&](uint64_t off, uint64_t n) {
    LayoutChange ch = Remap(dst, off, n, dst_size, dst_size);
    ch.kind = LayoutChangeKind::kAllocatingWrite;
    return ch;
  };
  std::vector<LayoutChange> out;
  if (p.nb) out.push_back(Remap(src, src_off + p.head, p.nb * kBlock, src_size, src_size));
  if (p.head) out.push_back(edge(dst_off, p.head));
  if (p.nb) out.push_back(Remap(dst, dst_off + p.head, p.nb * kBlock, dst_size, dst_size));
  if (p.tail) out.push_back(edge(dst_off + p.head + p.mid, p.tail));
  if (dst_off + len > dst_size) {
    out.back().size_changes = true;
    out.back().new_size = dst_off + len;
  }
  return out;
}

}  // namespace

Result<uint64_t> Filesystem::CopyFileRange(const Cred& c, Ino src, uint64_t src_off, Ino dst,
                                           uint64_t dst_off, uint64_t len) {
  Impl& fs = *impl_;
  WriterLock l(&fs.mu_);
  if (fs.read_only_) return Status::Error(EROFS);
  LFS_ASSIGN_OR_RETURN(Node * sn, fs.Get(src));
  LFS_ASSIGN_OR_RETURN(Node * dn, fs.Get(dst));
  if (sn->dir || dn->dir) return Status::Error(EISDIR);
  if (!S_ISREG(fs.I(src)->mode) || !S_ISREG(fs.I(dst)->mode)) return Status::Error(EINVAL);
  // generic_copy_file_checks refuses an immutable destination, and an
  // append-only one is written through O_APPEND only, which
  // copy_file_range refuses (EBADF).
  LFS_RETURN_IF_ERROR(fs.CheckRewritable(dst));
  const uint64_t src_size = fs.I(src)->size;
  if (src_off >= src_size || len == 0) return uint64_t{0};
  len = std::min(len, src_size - src_off);
  if (dst_off > kMaxFileSize || len > kMaxFileSize - dst_off) return Status::Error(EFBIG);
  if (src == dst && src_off < dst_off + len && dst_off < src_off + len)
    return Status::Error(EINVAL, "ranges of one file overlap");
  const CopyPlan p = PlanCopy(fs, src, src_off, dst, dst_off, len);
  // Every change is asked about before any is made (the copy by write is
  // asked once for all its writes), so a refusal leaves no trace.
  for (const LayoutChange& ch : CopyChanges(fs, p, src, src_off, dst, dst_off, len))
    LFS_RETURN_IF_ERROR(fs.GuardChange(c, ch));
  fs.DropPrivs(c, dst);  // before any byte changes, whichever path below runs

  if (!p.clone) {
    // Through the write path (which copies shared blocks before changing
    // them), straight from the pool mapping, with write(2)'s durability
    // contract, a megabyte at a time.
    uint64_t done = 0;
    while (done < len) {
      const uint64_t k = std::min<uint64_t>(len - done, 1 << 20);
      std::vector<struct iovec> iov = fs.Segments(src, src_off + done, k);
      auto w = fs.WriteLocked(c, dst, dst_off + done, iov.data(), static_cast<int>(iov.size()),
                              /*guard_asked=*/true);
      if (!w.ok()) {
        if (done > 0) return done;
        return w.status();
      }
      done += *w;
      if (*w < k) break;
    }
    return done;
  }

  const uint64_t dst_size = fs.I(dst)->size;
  if (dst_off > dst_size)
    LFS_RETURN_IF_ERROR(fs.ZeroRange(dst, dst_size, std::min(RoundUp(dst_size), dst_off)));
  // Source bytes for an edge: in the pool, or zeros.
  auto src_bytes = [&](uint64_t off) -> const char* {
    const auto m = sn->extents.Find(off / kBlock);
    if (!m || m->unwritten()) return fs.zeros_;
    return fs.pool_.BlockPtr(m->pool_block + (off / kBlock - m->file_block)) + off % kBlock;
  };
  std::vector<Impl::EdgeBlock> edges;
  if (p.head) {
    const uint32_t from = static_cast<uint32_t>(dst_off % kBlock);
    edges.push_back(fs.MakeEdge(dst, dst_off / kBlock, from, from + static_cast<uint32_t>(p.head),
                                src_bytes(src_off)));
  }
  if (p.tail) {
    const uint64_t at = dst_off + p.head + p.mid;
    edges.push_back(fs.MakeEdge(dst, at / kBlock, 0, static_cast<uint32_t>(p.tail),
                                src_bytes(src_off + p.head + p.mid)));
  }
  LFS_RETURN_IF_ERROR(fs.RunClone(src, (src_off + p.head) / kBlock, dst,
                                  (dst_off + p.head) / kBlock, p.nb,
                                  std::max(dst_size, dst_off + len), edges));
  return len;
}

std::vector<struct iovec> Filesystem::Impl::Segments(Ino ino, uint64_t off, uint64_t len) const {
  std::vector<struct iovec> iov;
  const uint64_t end = off + len;
  auto zeros = [&](uint64_t k) {
    for (; k > 0;) {
      const uint64_t z = std::min<uint64_t>(k, kZeroBytes);
      iov.push_back({const_cast<char*>(zeros_), z});
      k -= z;
    }
  };
  uint64_t at = off;
  const uint64_t fb = off / kBlock;
  for (const Mapping& m : N(ino)->extents.Overlapping(fb, (end - 1) / kBlock - fb + 1)) {
    const uint64_t mb = std::max(at, m.file_block * kBlock),
                   me = std::min(end, m.file_end() * kBlock);
    if (mb > at) zeros(mb - at);
    if (m.unwritten()) {
      zeros(me - mb);
    } else {
      iov.push_back({pool_.BlockPtr(m.pool_block) + (mb - m.file_block * kBlock), me - mb});
    }
    at = me;
  }
  if (end > at) zeros(end - at);
  return iov;
}

// ---------------------------------------------------------------------------
// Block map

Result<Filesystem::BlockMapView> Filesystem::BlockMap(Ino ino, uint64_t from_block, size_t max) {
  Impl& fs = *impl_;
  ReaderLock l(&fs.mu_);
  LFS_ASSIGN_OR_RETURN(Node * n, fs.Get(ino));
  if (n->dir) return Status::Error(EISDIR);
  BlockMapView view;
  view.file_size = fs.I(ino)->size;
  std::vector<BlockMapRun>& out = view.runs;
  // Blocks a reach record covers: a DAX mapping may reach them.
  auto quarantined = [&fs](uint64_t b) REQUIRES_SHARED(fs.mu_) { return fs.covered_.Covers(b); };
  for (auto m = n->extents.NextFrom(from_block); m && out.size() < max;
       m = n->extents.NextFrom(m->file_end())) {
    uint64_t skip = from_block > m->file_block ? from_block - m->file_block : 0;
    const uint32_t* rc = fs.pool_.refcount(m->pool_block);
    for (uint64_t i = skip; i < m->length && out.size() < max;) {
      const uint32_t v = rc[i];
      const bool qi = quarantined(m->pool_block + i);
      uint64_t j = i + 1;
      while (j < m->length && rc[j] == v && quarantined(m->pool_block + j) == qi) ++j;
      uint32_t flags = 0;
      if (m->unwritten()) flags |= LEASEFS_EXTENT_UNWRITTEN;
      if (v > 1) flags |= LEASEFS_EXTENT_SHARED;
      if (qi) flags |= LEASEFS_EXTENT_QUARANTINED;
      out.push_back({m->file_block + i, m->pool_block + i, j - i, flags, v});
      i = j;
    }
  }
  return view;
}

// ---------------------------------------------------------------------------
// Defrag

Result<Filesystem::DefragReport> Filesystem::Defrag(const Cred& c, Ino ino, uint64_t from_block,
                                                    uint64_t blocks_asked) {
  DefragReport report;
  const uint64_t end = blocks_asked > kToEnd - from_block ? kToEnd : from_block + blocks_asked;
  uint64_t goal = 0;  // where the next piece should start in the pool (0: anywhere)
  {
    ReaderLock l(&impl_->mu_);
    LFS_ASSIGN_OR_RETURN(Node * n, impl_->Get(ino));
    if (n->dir) return Status::Error(EISDIR);
    if (!S_ISREG(impl_->I(ino)->mode)) return Status::Error(EINVAL);
    if (impl_->read_only_) return Status::Error(EROFS);
    LFS_RETURN_IF_ERROR(impl_->CheckRewritable(ino));
    LFS_RETURN_IF_ERROR(impl_->Require(c, ino, W_OK));
    report.extents_before = n->extents.extent_count();
    // Continue after the block before the range, as the loop below
    // continues the previous piece.
    if (from_block > 0 && from_block < end) {
      if (const auto before = n->extents.Find(from_block - 1)) {
        const uint64_t at = before->pool_block + (from_block - 1 - before->file_block);
        if (!impl_->AnyShared(at, 1)) goal = at + 1;
      }
    }
  }
  // A piece at a time, each under the lock and in one transaction, so that
  // readers and writers of the file go on between pieces.
  constexpr uint64_t kPieceBlocks = 16384;
  constexpr size_t kPieceExtents = 1024;
  uint64_t cursor = from_block;
  while (cursor < end) {
    Impl& fs = *impl_;
    WriterLock l(&fs.mu_);
    Node* n = fs.N(ino);
    if (!n) break;  // deleted meanwhile
    // A remount may have made the pool read-only between two pieces; what
    // is done stays done (each piece is a transaction of its own).
    if (fs.read_only_) return Status::Error(EROFS);
    // The next run of unshared extents from the cursor.
    std::vector<Mapping> piece;
    uint64_t blocks = 0;
    for (auto m = n->extents.NextFrom(cursor); m && m->file_block < end;
         m = n->extents.NextFrom(m->file_end())) {
      Mapping mm = *m;
      if (mm.file_block < cursor) {
        const uint64_t cut = cursor - mm.file_block;
        mm.file_block += cut;
        mm.pool_block += cut;
        mm.length -= cut;
      }
      if (mm.file_end() > end) mm.length = end - mm.file_block;
      if (fs.AnyShared(mm.pool_block, mm.length)) {
        if (piece.empty()) {
          cursor = mm.file_end();
          continue;
        }
        break;
      }
      if (!piece.empty() && (blocks + mm.length > kPieceBlocks || piece.size() >= kPieceExtents))
        break;
      piece.push_back(mm);
      blocks += mm.length;
      if (blocks >= kPieceBlocks) break;
    }
    if (piece.empty()) break;
    cursor = piece.back().file_end();
    // Already one run that continues the last piece: nothing to gain.
    bool contiguous = true;
    for (size_t i = 1; i < piece.size(); ++i)
      contiguous &= piece[i].pool_block == piece[i - 1].pool_block + piece[i - 1].length;
    if (contiguous && (goal == 0 || piece.front().pool_block == goal || piece.size() == 1)) {
      goal = piece.back().pool_block + piece.back().length;
      continue;
    }
    Op op(fs);
    std::vector<BlockRange> got;
    if (!op.Reserve(blocks, goal, &got).ok()) break;  // no room to move: done
    if (got.size() >= piece.size()) continue;  // no fewer runs: leave it (Op frees)
    // The piece's extents go before the new ones come, so only the pieces
    // the new run is split into (and a split at the cursor) need slots.
    if (!fs.PlanSlots(op, ino, got.size() + 1).ok()) break;
    // The guard says whether this piece may move (a refusal ends the defrag
    // with its error; the pieces moved so far stay moved), and so do the
    // file's flags, which a chattr between two pieces may have set.
    LFS_RETURN_IF_ERROR(fs.CheckRewritable(ino));
    const uint64_t from = piece.front().file_block, size = fs.I(ino)->size;
    LFS_RETURN_IF_ERROR(fs.GuardChange(
        c, Remap(ino, from * kBlock, (piece.back().file_end() - from) * kBlock, size, size)));
    // Copy, then switch the map in one transaction.
    std::vector<Mapping> fresh;
    size_t gi = 0;
    uint64_t gused = 0;
    for (const Mapping& m : piece) {
      uint64_t done = 0;
      while (done < m.length) {
        const uint64_t k = std::min(m.length - done, got[gi].count - gused);
        const uint64_t to = got[gi].start + gused;
        if (!m.unwritten())
          fs.media_->CopyFlush(fs.pool_.BlockPtr(to), fs.pool_.BlockPtr(m.pool_block + done),
                               k * kBlock);
        fresh.push_back({m.file_block + done, to, k, m.flags});
        done += k;
        if ((gused += k) == got[gi].count) {
          ++gi;
          gused = 0;
        }
      }
    }
    fs.media_->Drain();
    const size_t chain_before = n->extents.chain().size();
    fs.AddPlannedSlots(op, ino);
    for (const Mapping& m : piece) {
      std::vector<Mapping> removed;
      n->extents.Remove(op.tx, m.file_block, m.length, &removed);
      op.AddRefs({m.pool_block, m.length}, -1);
    }
    for (const Mapping& m : fresh) n->extents.Insert(op.tx, m);
    for (const BlockRange& g : got) op.Claim(g);
    // Extent blocks left empty at the chain's end go, unless this piece
    // added one (it would be among them, claimed and dropped in one op).
    if (n->extents.chain().size() == chain_before) {
      std::vector<uint64_t> chain;
      n->extents.TrimChain(op.tx, &chain);
      for (uint64_t b : chain) op.Unref({b, 1});
    }
    op.Commit();
    report.blocks_moved += blocks;
    goal = got.back().end();
  }
  ReaderLock l(&impl_->mu_);
  if (Node* n = impl_->N(ino)) report.extents_after = n->extents.extent_count();
  return report;
}

// ---------------------------------------------------------------------------
// EXT4_IOC_MOVE_EXT

Result<uint64_t> Filesystem::MoveExtents(const Cred& c, Ino orig, Ino donor, uint64_t orig_block,
                                         uint64_t donor_block, uint64_t count) {
  Impl& fs = *impl_;
  WriterLock l(&fs.mu_);
  if (fs.read_only_) return Status::Error(EROFS);
  LFS_ASSIGN_OR_RETURN(Node * on, fs.Get(orig));
  LFS_ASSIGN_OR_RETURN(Node * dn, fs.Get(donor));
  if (orig == donor) return Status::Error(EINVAL, "original and donor are one file");
  if (on->dir || dn->dir || !S_ISREG(fs.I(orig)->mode) || !S_ISREG(fs.I(donor)->mode))
    return Status::Error(EINVAL, "not a regular file");
  // ext4_move_extents refuses such a donor; both files' blocks move.
  LFS_RETURN_IF_ERROR(fs.CheckRewritable(orig));
  LFS_RETURN_IF_ERROR(fs.CheckRewritable(donor));
  // ext4's rule (mext_check_arguments): never a setuid or setgid donor.
  if (fs.I(donor)->mode & (S_ISUID | S_ISGID))
    return Status::Error(EINVAL, "the donor is setuid or setgid");
  const uint64_t limit = kMaxFileSize / kBlock;
  if (count == 0 || orig_block >= limit || donor_block >= limit || count > limit - orig_block ||
      count > limit - donor_block)
    return Status::Error(EINVAL);
  // Only the original's blocks within its size move.
  const uint64_t orig_blocks = RoundUp(fs.I(orig)->size) / kBlock;
  if (orig_block >= orig_blocks) return Status::Error(EINVAL, "start past the end of file");
  count = std::min(count, orig_blocks - orig_block);
  uint64_t at = donor_block;
  for (const Mapping& m : dn->extents.Overlapping(donor_block, count)) {
    if (m.file_block != at) break;
    at = m.file_end();
  }
  if (at != donor_block + count) return Status::Error(ENODATA, "the donor has a hole there");
  for (const Mapping& m : on->extents.Overlapping(orig_block, count))
    if (fs.AnyShared(m.pool_block, m.length)) return Status::Error(EBUSY, "shared blocks");
  for (const Mapping& m : dn->extents.Overlapping(donor_block, count))
    if (fs.AnyShared(m.pool_block, m.length)) return Status::Error(EBUSY, "shared blocks");
  // The exchange gives each file's blocks to the other: a revoked holder of
  // a writable DAX mapping would then store into the other file.
  for (const auto& [node, from] : {std::pair{on, orig_block}, std::pair{dn, donor_block}})
    for (const Mapping& m : node->extents.Overlapping(from, count))
      if (fs.WritablyCovered(m.pool_block, m.length))
        return Status::Error(EBUSY, "blocks mapped for writing through DAX");
  if (on->extents.ChainBlocksFor(2 * count + 4) + dn->extents.ChainBlocksFor(2 * count + 4) >
      fs.alloc_.free_blocks())
    return Status::Error(ENOSPC, "pool is full");
  const uint64_t osize = fs.I(orig)->size, dsize = fs.I(donor)->size;
  LFS_RETURN_IF_ERROR(
      fs.GuardChange(c, Remap(orig, orig_block * kBlock, count * kBlock, osize, osize)));
  LFS_RETURN_IF_ERROR(
      fs.GuardChange(c, Remap(donor, donor_block * kBlock, count * kBlock, dsize, dsize)));
  // The original reads as before, so it keeps its privileges (as on ext4).
  // The donor's range gets the original's bytes: unlike ext4, which keeps
  // the donor's capability, drop it by the rule of every other change, so
  // that no writer can move bytes of its choice into a capable program.
  fs.DropPrivs(c, donor);

  constexpr uint64_t kPiece = 2048;
  const int64_t now = NowNs();
  for (uint64_t k = 0; k < count;) {
    const uint64_t ke = std::min(count, k + kPiece), n = ke - k;
    // Per block: the original's pool block and flags (0 = hole), the donor's.
    std::vector<uint64_t> opool(n, 0), dpool(n, 0);
    std::vector<uint32_t> oflag(n, 0);
    for (const Mapping& m : on->extents.Overlapping(orig_block + k, n))
      for (uint64_t i = 0; i < m.length; ++i) {
        opool[m.file_block - orig_block - k + i] = m.pool_block + i;
        oflag[m.file_block - orig_block - k + i] = m.flags;
      }
    for (const Mapping& m : dn->extents.Overlapping(donor_block + k, n))
      for (uint64_t i = 0; i < m.length; ++i) dpool[m.file_block - donor_block - k + i] = m.pool_block + i;
    // The original's data goes into the donor's blocks.
    for (uint64_t i = 0; i < n; ++i)
      if (opool[i] && !(oflag[i] & kExtentUnwritten))
        fs.media_->CopyFlush(fs.pool_.BlockPtr(dpool[i]), fs.pool_.BlockPtr(opool[i]), kBlock);
    fs.media_->Drain();
    Op op(fs);
    if (!fs.PlanSlots(op, orig, n + 2).ok() || !fs.PlanSlots(op, donor, n + 2).ok())
      return Status::Error(ENOSPC, "pool is full");
    fs.AddPlannedSlots(op, orig);
    fs.AddPlannedSlots(op, donor);
    std::vector<Mapping> removed;
    on->extents.Remove(op.tx, orig_block + k, n, &removed);
    dn->extents.Remove(op.tx, donor_block + k, n, &removed);
    // Exchange: the original maps the donor's blocks (a hole of the original
    // becomes an unwritten block), the donor the original's (or a hole).
    Inode oimg = *fs.I(orig), dimg = *fs.I(donor);
    for (uint64_t i = 0; i < n;) {
      const uint32_t f = opool[i] ? oflag[i] : kExtentUnwritten;
      uint64_t j = i + 1;
      while (j < n && dpool[j] == dpool[j - 1] + 1 && (opool[j] ? oflag[j] : kExtentUnwritten) == f)
        ++j;
      on->extents.Insert(op.tx, Mapping{orig_block + k + i, dpool[i], j - i, f});
      i = j;
    }
    for (uint64_t i = 0; i < n;) {
      if (!opool[i]) {
        ++oimg.blocks;
        --dimg.blocks;
        ++i;
        continue;
      }
      uint64_t j = i + 1;
      while (j < n && opool[j] && opool[j] == opool[j - 1] + 1 && oflag[j] == oflag[i]) ++j;
      dn->extents.Insert(op.tx, Mapping{donor_block + k + i, opool[i], j - i, oflag[i]});
      i = j;
    }
    oimg.ctime_ns = dimg.ctime_ns = now;
    fs.StageAttrs(op, orig, oimg);
    fs.StageAttrs(op, donor, dimg);
    op.Commit();
    k = ke;
  }
  return count;
}

}  // namespace leasefs::engine
