// The DAX path and the quarantine: handing out a file's pool blocks for
// direct load/store (MapForDax), the reach records that keep those blocks
// from reuse while a mapping may still reach them, and their removal
// (DropReach). The rule that keeps a covered block out of the allocator is
// Op::StageLastRef (filesystem.cc); the format is docs/pool_format.md
// "Quarantine".
#include <algorithm>
#include <cstring>

#include "engine/file_runs.h"
#include "engine/filesystem_impl.h"
#include "engine/superblock.h"

namespace leasefs::engine {

using namespace layout;

namespace {

constexpr uint64_t kBlock = kBlockSize;

// What MapForDax does to one part of the range: `kind` as found; with new
// blocks at `pool_block` for holes and shared blocks when writable (`fresh`).
struct Step {
  FileRun::Kind kind;
  uint64_t file_block;
  uint64_t length;
  uint64_t pool_block;  // where the blocks are after the change (0: a hole left alone)
  uint64_t old_block;   // kShared: the block copied from
  bool fresh;           // pool_block..+length are newly reserved blocks
};

// Journal bytes one step may cost in MapForDax's transaction: three extent
// slot writes (a split, a remove, an insert), a refcount fill and a record,
// with their record headers; and what every transaction keeps spare.
constexpr size_t kCostPerStep = 320;
constexpr size_t kSpare = 8192;
// Journal bytes a record's removal may cost: the record and two refcount
// fills (DropReach).
constexpr size_t kCostPerDrop = 160;
// Blocks one MapForDax call zeroes or copies at most (64 MiB): the work is
// done under the writer lock, which every other call of the mount waits
// for. Filling a never-touched block of a tmpfs-backed pool costs a page
// fault (about 5 s per GiB measured in a VM), so an unbounded call would
// stall the mount for seconds; the caller asks again for the rest.
constexpr uint64_t kMaxFillBlocks = (uint64_t{64} << 20) / kBlock;

}  // namespace

// ---------------------------------------------------------------------------
// Mount

Status Filesystem::Impl::LoadReach() {
  const Superblock& sb = *pool_.sb;
  const uint64_t slots = pool_.quarantine_count();
  if (sb.version == kFormatVersionV1) {
    // Version 1 reserved the table but nothing ever wrote it: a non-zero
    // byte there is damage, and the upgrade would read it as records.
    const char* t = pool_.BlockPtr(sb.quarantine_start);
    const uint64_t bytes = sb.quarantine_blocks * kBlockSize;
    if (std::any_of(t, t + bytes, [](char c) { return c != 0; }))
      return Status::Corruption(
          "format version 1 pool with a non-empty quarantine table (nothing writes it in that "
          "version): run fsck.leasefs -y, then mount again");
  }
  uint64_t free_from = 0;  // the run of free slots before `slot`
  for (uint64_t slot = 0; slot < slots; ++slot) {
    const QuarantineRecord& r = *Record(slot);
    if (r.length == 0) continue;
    free_records_.Insert({free_from, slot - free_from});
    free_from = slot + 1;
    // Past the mark the record may be sound and the mark damaged: fsck -y
    // raises the mark over it rather than removing it.
    if (pool_.InData(r.pool_block, r.length) && r.pool_block + r.length > CoveredEnd())
      return Status::Corruption(
          "quarantine record " + std::to_string(slot) + " covers block " +
          std::to_string(r.pool_block + r.length - 1) + ", past the refcount table's mark (" +
          std::to_string(marks_.refcount_blocks) + " refcount blocks): run fsck.leasefs -y");
    const char* why = !pool_.InData(r.pool_block, r.length) ? "lies outside the data area"
                      : r.map_id == 0                       ? "has map id 0"
                      : r.owner_pid <= 0                    ? "has no owner pid"
                      : (r.flags & ~kKnownReachFlags) != 0  ? "has unknown flags"
                                                            : nullptr;
    if (why)
      return Status::Corruption("quarantine record " + std::to_string(slot) + " " + why +
                                " (fsck.leasefs -y removes it)");
    IndexRecord(r);
    records_by_map_.emplace(r.map_id, slot);
  }
  free_records_.Insert({free_from, slots - free_from});
  return Status::Ok();
}

void Filesystem::Impl::IndexRecord(const QuarantineRecord& r) {
  covered_.Add({r.pool_block, r.length});
  if (r.flags & kReachWritable) writable_.Add({r.pool_block, r.length});
}

void Filesystem::Impl::UnindexRecord(const QuarantineRecord& r) {
  covered_.Remove({r.pool_block, r.length});
  if (r.flags & kReachWritable) writable_.Remove({r.pool_block, r.length});
}

bool Filesystem::Impl::SharesWritablyCovered(Ino ino, uint64_t fb, uint64_t count) const {
  if (writable_.empty()) return false;
  for (const Mapping& m : N(ino)->extents.Overlapping(fb, count))
    if (!m.unwritten() && WritablyCovered(m.pool_block, m.length)) return true;
  return false;
}

// ---------------------------------------------------------------------------
// MapForDax

// Plans MapForDax's change: the steps over [first, first + count), cut so that
// they make at most `max_runs` runs, fill at most kMaxFillBlocks blocks and
// fit one transaction, with new blocks
// reserved in `op` for holes and shared blocks when `writable`. Fills
// out->runs and out->covered. Errors: ENOSPC (no blocks).
static Status PlanDax(Filesystem::Impl& fs, Op& op, Ino ino, uint64_t first, uint64_t count,
                      bool writable, size_t max_runs, std::vector<Step>* steps,
                      Filesystem::DaxMapping* out) {
  const ExtentMap& em = fs.N(ino)->extents;
  const size_t room = op.room() > kSpare ? op.room() - kSpare : 0;
  const size_t max_steps = std::max<size_t>(1, room / kCostPerStep);
  std::vector<Filesystem::DaxRun>& runs = out->runs;
  // Adds [fb, +len) at pool block pb (or a hole) to the runs; false if it
  // needs a run more than max_runs allows.
  auto append = [&](uint64_t fb, uint64_t pb, uint64_t len, bool hole) {
    if (!runs.empty()) {
      Filesystem::DaxRun& b = runs.back();
      const bool joins = b.hole == hole && b.file_block + b.length == fb &&
                         (hole || (b.pool_block + b.length == pb && b.length + len <= UINT32_MAX));
      if (joins) {
        b.length += len;
        return true;
      }
    }
    if (runs.size() >= max_runs) return false;
    runs.push_back({fb, hole ? 0 : pb, len, hole});
    return true;
  };
  uint64_t fill_left = kMaxFillBlocks;
  // Only a writable mapping replaces shared blocks, so only it tells them apart.
  std::vector<FileRun> found = Survey(em, first, count);
  if (writable) found = SplitShared(fs.pool_, found);
  for (FileRun p : found) {
    if (steps->size() >= max_steps) break;
    const bool needs = writable && p.NeedsBlocks();
    if (needs || p.kind == FileRun::kUnwritten) {  // blocks FillDaxBlocks writes
      if (fill_left == 0) break;
      p.length = std::min(p.length, fill_left);
      fill_left -= p.length;
    }
    if (!needs) {
      if (!append(p.file_block, p.pool_block, p.length, p.kind == FileRun::kHole)) break;
      steps->push_back({p.kind, p.file_block, p.length, p.pool_block, 0, false});
      continue;
    }
    const uint64_t goal = runs.empty() || runs.back().hole
                              ? GoalFor(em, p.file_block)
                              : runs.back().pool_block + runs.back().length;
    std::vector<BlockRange> got;
    LFS_RETURN_IF_ERROR(op.Reserve(p.length, goal, &got));
    size_t used = 0;
    uint64_t fb = p.file_block;
    for (; used < got.size() && steps->size() < max_steps; ++used) {
      if (!append(fb, got[used].start, got[used].count, false)) break;
      const uint64_t old = p.kind == FileRun::kShared ? p.pool_block + (fb - p.file_block) : 0;
      steps->push_back({p.kind, fb, got[used].count, got[used].start, old, true});
      fb += got[used].count;
    }
    for (size_t i = used; i < got.size(); ++i) op.Unreserve(got[i]);
    if (used < got.size()) break;
  }
  out->covered = (runs.back().file_block + runs.back().length - first) * kBlock;
  return Status::Ok();
}

// Writes the bytes of the new and converted blocks (zeros, or the shared
// block's contents) and makes them durable: before the transaction that maps
// them or marks them written, so a crash exposes nothing stale.
static void FillDaxBlocks(Filesystem::Impl& fs, const std::vector<Step>& steps) {
  for (const Step& s : steps) {
    if (s.kind == FileRun::kShared && s.fresh) {
      fs.media_->CopyFlush(fs.pool_.BlockPtr(s.pool_block), fs.pool_.BlockPtr(s.old_block),
                           s.length * kBlock);
    } else if (s.kind == FileRun::kUnwritten || (s.kind == FileRun::kHole && s.fresh)) {
      fs.media_->SetFlush(fs.pool_.BlockPtr(s.pool_block), 0, s.length * kBlock);
    }
  }
  fs.media_->Drain();
}

// Stages the block-map changes of `steps` into op.
static void StageDaxSteps(Filesystem::Impl& fs, Op& op, Ino ino, const std::vector<Step>& steps) {
  ExtentMap& em = fs.N(ino)->extents;
  uint64_t blocks = fs.I(ino)->blocks;
  bool changed = false;
  fs.AddPlannedSlots(op, ino);
  for (const Step& s : steps) {
    if (s.kind == FileRun::kUnwritten) {
      em.MarkWritten(op.tx, s.file_block, s.length);
      changed = true;
    }
    if (!s.fresh) continue;
    if (s.kind == FileRun::kShared) {
      std::vector<Mapping> removed;
      em.Remove(op.tx, s.file_block, s.length, &removed);
      op.AddRefs({s.old_block, s.length}, -1);
      blocks -= s.length;
    }
    em.Insert(op.tx, Mapping{s.file_block, s.pool_block, s.length, 0});
    op.Claim({s.pool_block, s.length});
    blocks += s.length;
    changed = true;
  }
  if (changed) op.tx.Put(&fs.I(ino)->blocks, blocks);
}

Result<Filesystem::DaxMapping> Filesystem::MapForDax(const Cred& c, Ino ino, uint64_t off,
                                                     uint64_t len, bool writable,
                                                     uint64_t map_id, const ReachOwner& owner,
                                                     size_t max_runs) {
  Impl& fs = *impl_;
  WriterLock l(&fs.mu_);
  LFS_ASSIGN_OR_RETURN(Node * n, fs.Get(ino));
  if (n->dir) return Status::Error(EISDIR);
  if (!S_ISREG(fs.I(ino)->mode)) return Status::Error(EINVAL, "not a regular file");
  if (len == 0 || off % kBlock != 0 || len % kBlock != 0 || off + len < off)
    return Status::Error(EINVAL, "DAX ranges are whole blocks");
  if (map_id == 0 || owner.pid <= 0 || max_runs == 0)
    return Status::Error(EINVAL, "a mapping needs an id, an owner and room for a run");
  if (fs.read_only_) return Status::Error(EROFS);
  // Stores through a writable mapping reach the pool without the daemon.
  if (writable) LFS_RETURN_IF_ERROR(fs.CheckRewritable(ino));

  DaxMapping out;
  out.file_size = fs.I(ino)->size;
  const uint64_t end_block =
      std::min((off + len) / kBlock, (out.file_size + kBlock - 1) / kBlock);
  const uint64_t first = off / kBlock;
  if (first >= end_block) return out;  // at or past the end of the file

  // Plan: reserve blocks, extent slots and table slots; ask the guard.
  Op op(fs);
  std::vector<Step> steps;
  LFS_RETURN_IF_ERROR(
      PlanDax(fs, op, ino, first, end_block - first, writable, max_runs, &steps, &out));
  size_t fresh = 0, unwritten = 0, removes = 0;
  for (const Step& s : steps) {
    fresh += s.fresh ? 1 : 0;
    removes += s.fresh && s.kind == FileRun::kShared ? 1 : 0;
    unwritten += s.kind == FileRun::kUnwritten ? 1 : 0;
  }
  LFS_RETURN_IF_ERROR(fs.PlanSlots(op, ino,
                                   fresh * ExtentMap::kSlotsPerInsert +
                                       removes * ExtentMap::kSlotsPerRemove +
                                       unwritten * ExtentMap::kSlotsPerMarkWritten));
  const size_t records = static_cast<size_t>(
      std::count_if(out.runs.begin(), out.runs.end(), [](const DaxRun& r) { return !r.hole; }));
  if (records > fs.free_records_.size())
    return Status::Error(ENOSPC, "the pool's quarantine table is full (" +
                                     std::to_string(fs.pool_.quarantine_count()) + " records)");
  if (fresh > 0) {
    LayoutChange ch;
    ch.ino = ino;
    ch.kind = LayoutChangeKind::kAllocatingWrite;
    ch.offset = off;
    ch.length = out.covered;
    ch.old_size = ch.new_size = out.file_size;
    LFS_RETURN_IF_ERROR(fs.GuardChange(c, ch));
  }

  // Data first, then one transaction: the block map and the records.
  FillDaxBlocks(fs, steps);
  StageDaxSteps(fs, op, ino, steps);
  for (const DaxRun& r : out.runs) {
    if (r.hole) continue;
    const uint64_t slot = fs.free_records_.first();
    fs.free_records_.Erase({slot, 1});
    QuarantineRecord rec{};
    rec.pool_block = r.pool_block;
    rec.length = static_cast<uint32_t>(r.length);
    rec.flags = writable ? uint32_t{kReachWritable} : 0u;
    rec.map_id = map_id;
    rec.ino = ino;
    rec.file_block = r.file_block;
    rec.owner_pid = owner.pid;
    rec.uid = c.uid();
    rec.owner_start = owner.start_ticks;
    rec.owner_boot = owner.boot_id;
    op.tx.Put(fs.Record(slot), rec);
    fs.IndexRecord(rec);
    fs.records_by_map_.emplace(map_id, slot);
  }
  op.Commit();
  return out;
}

// ---------------------------------------------------------------------------
// DropReach, and what the table holds

size_t Filesystem::DropReach(uint64_t map_id) {
  Impl& fs = *impl_;
  WriterLock l(&fs.mu_);
  if (fs.mapped_read_only_) return 0;  // no mapping was made by this mount
  std::vector<uint64_t> slots;
  auto [b, e] = fs.records_by_map_.equal_range(map_id);
  for (auto it = b; it != e; ++it) slots.push_back(it->second);
  fs.records_by_map_.erase(b, e);
  if (fs.read_only_) {
    // Remounted read-only with this (read-only) mapping alive: the pool
    // cannot be written now, so the records go when it is writable again
    // (SetReadOnly), or at the next mount, whose daemon finds their owner
    // gone. Until then they keep what they cover, as they should.
    fs.undropped_records_.insert(fs.undropped_records_.end(), slots.begin(), slots.end());
    return slots.size();
  }
  fs.ClearRecords(slots);
  return slots.size();
}

void Filesystem::Impl::ClearRecords(const std::vector<uint64_t>& slots) {
  // Usually one transaction; a mapping of more records than the journal
  // holds takes several, each consistent on its own (the records still in
  // the table keep their blocks, as they should until they go).
  for (size_t done = 0; done < slots.size();) {
    Op op(*this);
    std::vector<BlockRange> ranges;
    for (; done < slots.size() && (ranges.empty() || op.room() > kSpare + kCostPerDrop); ++done) {
      QuarantineRecord* rec = Record(slots[done]);
      ranges.push_back({rec->pool_block, rec->length});
      UnindexRecord(*rec);
      op.tx.Put(rec, QuarantineRecord{});
      free_records_.Insert({slots[done], 1});
    }
    for (const BlockRange& r : ranges)
      for (const BlockRange& q : quarantined_.Parts(r))
        for (const BlockRange& u : covered_.UncoveredParts(q)) op.FreeQuarantined(u);
    op.Commit();
  }
}

size_t Filesystem::Impl::WritableRecords() const {
  return static_cast<size_t>(
      std::count_if(records_by_map_.begin(), records_by_map_.end(),
                    [this](const auto& e) { return (Record(e.second)->flags & kReachWritable) != 0; }));
}

std::vector<Filesystem::ReachRecord> Filesystem::ReachRecords() {
  Impl& fs = *impl_;
  ReaderLock l(&fs.mu_);
  std::vector<ReachRecord> out;
  for (const auto& [id, slot] : fs.records_by_map_) {
    const QuarantineRecord& r = *fs.Record(slot);
    ReachRecord rr;
    rr.map_id = r.map_id;
    rr.ino = r.ino;
    rr.file_block = r.file_block;
    rr.pool_block = r.pool_block;
    rr.length = r.length;
    rr.quarantined = fs.quarantined_.CountIn({r.pool_block, r.length});
    rr.writable = (r.flags & kReachWritable) != 0;
    rr.owner = {r.owner_pid, r.owner_start, r.owner_boot};
    rr.uid = r.uid;
    out.push_back(rr);
  }
  std::stable_sort(out.begin(), out.end(), [](const ReachRecord& a, const ReachRecord& b) {
    return a.map_id != b.map_id ? a.map_id < b.map_id : a.pool_block < b.pool_block;
  });
  return out;
}

Filesystem::QuarantineStats Filesystem::Quarantine() {
  Impl& fs = *impl_;
  ReaderLock l(&fs.mu_);
  QuarantineStats s;
  s.capacity = fs.pool_.quarantine_count();
  s.records = s.capacity - fs.free_records_.size();
  s.quarantined = fs.quarantined_.size();
  return s;
}

}  // namespace leasefs::engine
