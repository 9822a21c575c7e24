// File data: read, write, truncate, preallocate, SEEK_DATA/SEEK_HOLE, and
// the attribute changes that go with them.
//
// Durability contract (docs/durability.md): when Write returns, its data is
// durable, and so is every block-map and size change it made. New blocks are
// filled (data, and zeros around it) and flushed before the transaction that
// maps them commits, so a crash never exposes stale pool contents. An
// overwrite of already-written blocks is made in place and is not atomic: a
// crash during it may leave any mix of old and new bytes in its range. The
// timestamps that reads and overwrites set in place are durable at the next
// fsync of the file or at unmount.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cassert>
#include <cstring>

#include <linux/falloc.h>

#include "base/clock.h"
#include "engine/file_runs.h"
#include "engine/filesystem_impl.h"

namespace leasefs::engine {

using namespace layout;

namespace {

constexpr uint64_t kBlock = kBlockSize;
constexpr int64_t kDayNs = int64_t{86400} * 1'000'000'000;

uint64_t RoundUp(uint64_t x) { return (x + kBlock - 1) & ~(kBlock - 1); }

// Reads a sequence of iovecs front to back.
class IovReader {
 public:
  IovReader(const struct iovec* iov, int count) : iov_(iov), count_(count) {}
  // Copies the next `n` bytes to pool address `dst` (flushed, not drained).
  void CopyTo(Media& m, char* dst, size_t n) {
    while (n > 0) {
      assert(i_ < count_);
      const size_t avail = iov_[i_].iov_len - off_;
      const size_t k = std::min(avail, n);
      m.CopyFlush(dst, static_cast<const char*>(iov_[i_].iov_base) + off_, k);
      dst += k;
      n -= k;
      off_ += k;
      if (off_ == iov_[i_].iov_len) {
        ++i_;
        off_ = 0;
      }
    }
  }

 private:
  const struct iovec* iov_;
  int count_;
  int i_ = 0;
  size_t off_ = 0;
};

// Stretches the first and last runs, when unwritten, to their whole extents
// (Survey clips them to the write).
void WidenUnwritten(const ExtentMap& em, std::vector<FileRun>* runs) {
  for (FileRun* r : {&runs->front(), &runs->back()}) {
    if (r->kind != FileRun::kUnwritten) continue;
    const auto m = em.Find(r->file_block);
    r->file_block = m->file_block;
    r->pool_block = m->pool_block;
    r->length = m->length;
  }
}

// Whether a change of the file by `c` drops setgid (Linux >= 6.2,
// setattr_should_drop_sgid): always when the group may execute, otherwise
// when the caller is neither in the file's group nor root.
bool DropsSetgid(const Cred& c, const Inode& in) {
  if (!(in.mode & S_ISGID)) return false;
  return (in.mode & S_IXGRP) || !(c.is_root() || c.InGroup(in.gid));
}

void StoreTime(int64_t* field, int64_t v) { __atomic_store_n(field, v, __ATOMIC_RELAXED); }

// What a truncate from `old_size` to `new_size` changes, for the layout
// guard: every block from the one holding the smaller size on (a shrink
// frees them; a growth zeroes the tail of the old last block, copying it
// first if it is shared), and the size.
LayoutChange SizeChange(Ino ino, uint64_t old_size, uint64_t new_size) {
  LayoutChange ch;
  ch.ino = ino;
  ch.kind = LayoutChangeKind::kUnmap;
  ch.offset = std::min(old_size, new_size) & ~(kBlock - 1);
  ch.length = LayoutChange::kToEnd;
  ch.size_changes = true;
  ch.old_size = old_size;
  ch.new_size = new_size;
  return ch;
}

}  // namespace

// ---------------------------------------------------------------------------
// Privileges on change
//
// Linux's rule (fs/inode.c: file_remove_privs -> dentry_needs_remove_privs;
// fs/attr.c: setattr_should_drop_suidgid; security/commoncap.c:
// cap_inode_need_killpriv), which write, truncate, O_TRUNC, fallocate,
// copy_file_range and reflink all apply to the file they change:
//  - security.capability is removed whoever makes the change, root
//    included: cap_inode_need_killpriv asks only whether the xattr exists;
//  - setuid is cleared, and setgid as DropsSetgid says, unless the caller
//    has CAP_FSETID (for the engine: is root).
// Checked on tmpfs and ext4 (tests/fuse/privs_test.cc runs there too).

Filesystem::Impl::PrivDrop Filesystem::Impl::PrivsToDrop(const Cred& c, Ino ino) const {
  const Inode& in = *I(ino);
  PrivDrop d;
  if (!S_ISREG(in.mode)) return d;
  if (!c.is_root()) {
    d.mode_bits = in.mode & S_ISUID;
    if (DropsSetgid(c, in)) d.mode_bits |= S_ISGID;
  }
  d.capability = in.xattr_block != 0 && HasXattr(ino, kCapabilityXattr);
  return d;
}

void Filesystem::Impl::DropPrivs(const Cred& c, Ino ino) {
  const PrivDrop d = PrivsToDrop(c, ino);
  if (!d.any()) return;
  // One transaction for the bits, the capability and ctime, committed before
  // the caller changes a byte: a crash may leave the privileges dropped and
  // the bytes unchanged (as on Linux, where file_remove_privs comes first),
  // never the bytes changed under privileges that should have gone.
  Op op(*this);
  if (d.capability) StageRemoveXattr(op, ino, kCapabilityXattr);
  Inode img = *I(ino);
  img.mode &= ~d.mode_bits;
  img.ctime_ns = NowNs();
  StageAttrs(op, ino, img);
  op.Commit();
}

Status Filesystem::RemovePrivs(const Cred& c, Ino ino) {
  Impl& fs = *impl_;
  WriterLock l(&fs.mu_);
  LFS_RETURN_IF_ERROR(fs.Get(ino).status());
  LFS_RETURN_IF_ERROR(fs.CheckMutable(ino));
  LFS_RETURN_IF_ERROR(fs.Require(c, ino, W_OK));
  if (!fs.PrivsToDrop(c, ino).any()) return Status::Ok();
  if (fs.read_only_) return Status::Error(EROFS);
  fs.DropPrivs(c, ino);
  return Status::Ok();
}

bool Filesystem::WouldRemovePrivs(const Cred& c, Ino ino) {
  ReaderLock l(&impl_->mu_);
  return impl_->N(ino) != nullptr && impl_->PrivsToDrop(c, ino).any();
}

// ---------------------------------------------------------------------------
// Read

void Filesystem::Impl::TouchAtime(Inode* in) const {
  if (read_only_ || options_.atime == AtimeMode::kNever) return;
  if (in->flags & kInodeNoatime) return;  // chattr +A
  if (S_ISDIR(in->mode) && options_.nodiratime) return;
  const int64_t now = NowNs();
  const int64_t atime = __atomic_load_n(&in->atime_ns, __ATOMIC_RELAXED);
  // relatime: only when atime is not after mtime or ctime, or is a day old.
  if (options_.atime == AtimeMode::kRelatime && atime > in->mtime_ns && atime > in->ctime_ns &&
      now - atime < kDayNs)
    return;
  StoreTime(&in->atime_ns, now);
}

Status Filesystem::Read(Ino ino, uint64_t off, size_t len,
                        const std::function<void(const struct iovec*, int)>& sink) {
  Impl& fs = *impl_;
  ReaderLock l(&fs.mu_);
  LFS_ASSIGN_OR_RETURN(Node * n, fs.Get(ino));
  Inode* in = fs.I(ino);
  if (n->dir) return Status::Error(EISDIR);
  if (!S_ISREG(in->mode)) return Status::Error(EINVAL);
  if (len == 0) {
    sink(nullptr, 0);
    return Status::Ok();
  }
  // A read at or past the end counts as an access too, as on ext4 and tmpfs.
  fs.TouchAtime(in);
  const uint64_t size = in->size;
  if (off >= size) {
    sink(nullptr, 0);
    return Status::Ok();
  }
  std::vector<struct iovec> iov = fs.Segments(ino, off, std::min<uint64_t>(len, size - off));
  sink(iov.data(), static_cast<int>(iov.size()));
  return Status::Ok();
}

// ---------------------------------------------------------------------------
// Write

Result<size_t> Filesystem::Write(const Cred& c, Ino ino, uint64_t off, const struct iovec* src,
                                 int count, bool append) {
  WriterLock l(&impl_->mu_);
  return impl_->WriteLocked(c, ino, off, src, count, /*guard_asked=*/false, append);
}

namespace {

// How many of `len` bytes a write at `off` of `ino` would write (0: none,
// the write changes nothing), or the error it fails with. One function for
// the write and WouldAllocate, so that they clamp alike. `append` as
// Filesystem::Write says.
Result<uint64_t> WritableLength(const Filesystem::Impl& fs, Ino ino, uint64_t off, uint64_t len,
                                bool append) {
  if (fs.read_only_) return Status::Error(EROFS);
  LFS_ASSIGN_OR_RETURN(Node * n, fs.Get(ino));
  if (n->dir) return Status::Error(EISDIR);
  if (!S_ISREG(fs.I(ino)->mode)) return Status::Error(EINVAL);
  // ext4_write_checks refuses an immutable file; an append-only one only
  // ever grows at its end, through O_APPEND (the kernel's FUSE knows
  // neither flag, so nothing refused them before).
  LFS_RETURN_IF_ERROR(fs.CheckMutable(ino));
  if (fs.AppendOnly(ino) && !(append && off == fs.I(ino)->size))
    return Status::Error(EPERM, "append-only: writes only at the end, through O_APPEND");
  if (len == 0) return uint64_t{0};
  if (off >= kMaxFileSize) return Status::Error(EFBIG);
  return std::min(len, kMaxFileSize - off);
}

}  // namespace

bool Filesystem::Impl::WriteAllocates(Ino ino, uint64_t off, uint64_t len) const {
  if (off + len > I(ino)->size) return true;  // extends the file
  const uint64_t first = off / kBlock, end = (off + len - 1) / kBlock + 1;
  const ExtentMap& em = N(ino)->extents;
  uint64_t at = first;
  for (auto m = em.NextFrom(first); m && m->file_block < end; m = em.NextFrom(m->file_end())) {
    if (m->file_block > at) return true;  // fills a hole
    if (!m->unwritten()) {
      const uint64_t b = std::max(first, m->file_block), e = std::min(end, m->file_end());
      if (AnyShared(m->pool_block + (b - m->file_block), e - b)) return true;  // copy on write
    }
    at = m->file_end();
  }
  return at < end;  // fills a hole at the end of the range
}

LayoutChange Filesystem::Impl::WriteChange(Ino ino, uint64_t off, uint64_t len) const {
  LayoutChange ch;
  ch.ino = ino;
  ch.kind = WriteAllocates(ino, off, len) ? LayoutChangeKind::kAllocatingWrite
                                          : LayoutChangeKind::kOverwrite;
  ch.offset = off;
  ch.length = len;
  ch.old_size = I(ino)->size;
  ch.size_changes = off + len > ch.old_size;
  ch.new_size = std::max(ch.old_size, off + len);
  if (ch.kind == LayoutChangeKind::kAllocatingWrite) {
    // New blocks replace whole blocks, bytes beside the write's included;
    // and a write past the end may copy the old last block (if shared) to
    // zero its tail. Report every block whose mapping may change.
    const uint64_t from = std::min(off, ch.old_size) / kBlock * kBlock;
    ch.offset = from;
    ch.length = RoundUp(off + len) - from;
  }
  return ch;
}

bool Filesystem::WouldAllocate(Ino ino, uint64_t off, uint64_t len) {
  ReaderLock l(&impl_->mu_);
  const Result<uint64_t> n = WritableLength(*impl_, ino, off, len, /*append=*/true);
  return n.ok() && *n > 0 && impl_->WriteAllocates(ino, off, *n);
}

Result<size_t> Filesystem::Impl::WriteLocked(const Cred& c, Ino ino, uint64_t off,
                                             const struct iovec* src, int count, bool guard_asked,
                                             bool append) {
  uint64_t len = 0;
  for (int i = 0; i < count; ++i) len += src[i].iov_len;
  LFS_ASSIGN_OR_RETURN(len, WritableLength(*this, ino, off, len, append));
  if (len == 0) return size_t{0};
  Node* n = N(ino);
  if (!guard_asked) LFS_RETURN_IF_ERROR(GuardChange(c, WriteChange(ino, off, len)));
  DropPrivs(c, ino);

  // Bytes between the old end of file and the write read as zeros.
  const uint64_t old_size = I(ino)->size;
  if (off > old_size)
    LFS_RETURN_IF_ERROR(ZeroRange(ino, old_size, std::min(RoundUp(old_size), off)));

  // Plan: find the blocks that need new pool blocks (holes, and blocks
  // shared by reflink, which are copied first), reserve as many as there
  // are, and extent slots for the new mappings.
  uint64_t fb = off / kBlock;
  std::vector<FileRun> runs =
      SplitShared(pool_, Survey(n->extents, fb, (off + len - 1) / kBlock - fb + 1));
  uint64_t new_blocks = 0;
  size_t fresh = 0, unwritten = 0;
  for (const FileRun& r : runs) {
    new_blocks += r.NeedsBlocks() ? r.length : 0;
    fresh += r.NeedsBlocks() ? 1 : 0;
    unwritten += r.kind == FileRun::kUnwritten ? 1 : 0;
  }
  Op op(*this);
  std::vector<BlockRange> got;
  const uint64_t reserved = op.ReserveUpTo(new_blocks, GoalFor(n->extents, fb), &got);
  if (reserved < new_blocks) {
    // Short write: stop at the first block left without a pool block.
    uint64_t left = reserved, stop = 0;
    for (const FileRun& r : runs) {
      if (!r.NeedsBlocks()) continue;
      if (left < r.length) {
        stop = r.file_block + left;
        break;
      }
      left -= r.length;
    }
    if (stop * kBlock <= off) return Status::Error(ENOSPC, "pool is full");
    len = stop * kBlock - off;
    runs = SplitShared(pool_, Survey(n->extents, fb, stop - fb));
  }
  // New mappings: at most one per reserved piece plus one per run it is
  // split across; replacing a shared run may split its extent (one slot);
  // converting an unwritten run may split it in three.
  if (new_blocks || unwritten) {
    const size_t new_slots = got.size() + 2 * fresh;
    Status s = PlanSlots(op, ino, new_slots + ExtentMap::kSlotsPerMarkWritten * unwritten);
    if (!s.ok() && unwritten) {
      // No room to split preallocated extents: convert the ones this write
      // touches whole, zeroing them, which needs no new slot (ext4's
      // "zeroout"). Slow for a huge extent, but a write into preallocated
      // space must not fail for lack of space.
      WidenUnwritten(n->extents, &runs);
      s = PlanSlots(op, ino, new_slots);
    }
    LFS_RETURN_IF_ERROR(s);
  }

  // Data: fill every byte of every new (or unwritten) block, from the old
  // block where it was shared, with zeros otherwise; write the caller's
  // bytes in place; make all of it durable before any metadata.
  const uint64_t end = off + len;
  IovReader reader(src, count);
  std::vector<Mapping> new_maps;
  std::vector<Mapping> replaced;  // shared runs that new blocks replace
  size_t piece = 0;
  uint64_t piece_used = 0;
  for (const FileRun& r : runs) {
    if (r.kind == FileRun::kShared) replaced.push_back({r.file_block, r.pool_block, r.length, 0});
    uint64_t fblk = r.file_block;
    uint64_t left = r.length;
    while (left > 0) {
      uint64_t pblk, k;
      if (r.NeedsBlocks()) {
        const BlockRange& g = got[piece];
        pblk = g.start + piece_used;
        k = std::min(left, g.count - piece_used);
        new_maps.push_back({fblk, pblk, k, 0});
        if ((piece_used += k) == g.count) {
          ++piece;
          piece_used = 0;
        }
      } else {
        pblk = r.pool_block + (fblk - r.file_block);
        k = left;
      }
      char* base = pool_.BlockPtr(pblk);
      const uint64_t rb = fblk * kBlock, re = (fblk + k) * kBlock;
      const uint64_t wb = std::max(rb, off), we = std::min(re, end);
      if (r.kind == FileRun::kShared) {  // bytes around the write keep the old contents
        const char* old = pool_.BlockPtr(r.pool_block + (fblk - r.file_block));
        if (wb > rb) media_->CopyFlush(base, old, wb - rb);
        if (re > we) media_->CopyFlush(base + (we - rb), old + (we - rb), re - we);
      } else if (r.kind != FileRun::kWritten) {  // bytes around the write read as zeros
        if (wb > rb) media_->SetFlush(base, 0, wb - rb);
        if (re > we) media_->SetFlush(base + (we - rb), 0, re - we);
      }
      reader.CopyTo(*media_, base + (wb - rb), we - wb);
      fblk += k;
      left -= k;
    }
  }
  media_->Drain();

  // Metadata: one transaction if the map, size or mode change; otherwise the
  // timestamps are stored in place.
  const int64_t now = NowNs();
  Inode img = *I(ino);
  if (new_maps.empty() && unwritten == 0 && end <= img.size) {
    StoreTime(&I(ino)->mtime_ns, now);
    StoreTime(&I(ino)->ctime_ns, now);
    return static_cast<size_t>(len);
  }
  AddPlannedSlots(op, ino);
  for (const Mapping& m : replaced) {
    std::vector<Mapping> out;
    n->extents.Remove(op.tx, m.file_block, m.length, &out);
    op.AddRefs({m.pool_block, m.length}, -1);
    img.blocks -= m.length;
  }
  for (const Mapping& m : new_maps) {
    n->extents.Insert(op.tx, m);
    op.Claim({m.pool_block, m.length});
    img.blocks += m.length;
  }
  if (unwritten) {
    const uint64_t first = runs.front().file_block;
    n->extents.MarkWritten(op.tx, first, runs.back().file_block + runs.back().length - first);
  }
  img.size = std::max(img.size, end);
  img.mtime_ns = img.ctime_ns = now;
  StageAttrs(op, ino, img);
  op.Commit();
  return static_cast<size_t>(len);
}

Status Filesystem::Fsync(Ino ino, bool /*datasync*/) {
  ReaderLock l(&impl_->mu_);
  LFS_RETURN_IF_ERROR(impl_->Get(ino).status());
  // Data and metadata are durable already; only timestamps stored in place
  // may still be in flight.
  impl_->media_->Persist(impl_->I(ino), offsetof(Inode, btime_ns));
  return Status::Ok();
}

// ---------------------------------------------------------------------------
// Size changes

Status Filesystem::Impl::Resize(Ino ino, uint64_t size, Inode img) {
  const uint64_t old = I(ino)->size;
  img.size = size;
  if (size < old) {
    TruncateBlocks(ino, RoundUp(size) / kBlock, [&](Op& op) { StageAttrs(op, ino, img); });
    return Status::Ok();
  }
  // Growing exposes the rest of the old last block: clear it first.
  if (size > old) LFS_RETURN_IF_ERROR(ZeroRange(ino, old, std::min(RoundUp(old), size)));
  Op op(*this);
  StageAttrs(op, ino, img);
  op.Commit();
  return Status::Ok();
}

Result<Entry> Filesystem::SetAttr(const Cred& c, Ino ino, const SetAttrArgs& a) {
  Impl& fs = *impl_;
  WriterLock l(&fs.mu_);
  LFS_ASSIGN_OR_RETURN(Node * n, fs.Get(ino));
  if (fs.read_only_) return Status::Error(EROFS);
  Inode img = *fs.I(ino);
  const bool owner = fs.OwnerOrRoot(c, img);
  using A = SetAttrArgs;
  const unsigned v = a.valid;
  // ext4_setattr refuses every change of an immutable inode; notify_change
  // refuses an append-only one a new owner, mode or explicit times.
  LFS_RETURN_IF_ERROR(fs.CheckMutable(ino));
  if ((v & (A::kMode | A::kUid | A::kGid | A::kAtime | A::kMtime)) && fs.AppendOnly(ino))
    return Status::Error(EPERM, "append-only");
  if (v & A::kSize) {
    if (n->dir) return Status::Error(EISDIR);
    if (!S_ISREG(img.mode)) return Status::Error(EINVAL);
    if (a.size > kMaxFileSize) return Status::Error(EFBIG);
    if (!a.via_open_file) LFS_RETURN_IF_ERROR(fs.Require(c, ino, W_OK));
    // vfs_truncate and do_ftruncate: not even growing it.
    if (fs.AppendOnly(ino)) return Status::Error(EPERM, "append-only");
  }
  if ((v & A::kUid) && !c.is_root() && (c.uid() != img.uid || a.uid != img.uid))
    return Status::Error(EPERM, "only root may give a file away");
  if ((v & A::kGid) && !c.is_root() &&
      (c.uid() != img.uid || (a.gid != img.gid && !c.InGroup(a.gid))))
    return Status::Error(EPERM, "not the owner, or not a member of the group");
  if ((v & A::kMode) && !owner) return Status::Error(EPERM, "not the owner");
  if (v & (A::kAtime | A::kMtime)) {
    if (!owner) return Status::Error(EPERM, "only the owner may set explicit times");
  } else if ((v & (A::kAtimeNow | A::kMtimeNow)) && !owner) {
    LFS_RETURN_IF_ERROR(fs.Require(c, ino, W_OK));
  }

  if ((v & A::kSize) && a.size != img.size)
    LFS_RETURN_IF_ERROR(fs.GuardChange(c, SizeChange(ino, img.size, a.size)));
  if (v & A::kSize) {  // a truncate drops privileges first (DropPrivs)
    fs.DropPrivs(c, ino);
    img.mode = fs.I(ino)->mode;
  }
  const int64_t now = NowNs();
  if (v & (A::kUid | A::kGid)) {
    if (v & A::kUid) img.uid = a.uid;
    if (v & A::kGid) img.gid = a.gid;
    if (!n->dir) {  // chown clears setuid, even for root, and setgid as above
      const bool drop_sgid = DropsSetgid(c, *fs.I(ino));
      img.mode &= ~S_ISUID;
      if (drop_sgid) img.mode &= ~S_ISGID;
    }
  }
  if (v & A::kMode) {
    img.mode = (img.mode & S_IFMT) | (a.mode & 07777);
    if ((img.mode & S_ISGID) && !c.is_root() && !c.InGroup(img.gid)) img.mode &= ~S_ISGID;
  }
  const bool resize = (v & A::kSize) && a.size != img.size;
  if (resize) img.mtime_ns = now;
  if (v & A::kAtime) img.atime_ns = a.atime_ns;
  if (v & A::kAtimeNow) img.atime_ns = now;
  if (v & A::kMtime) img.mtime_ns = a.mtime_ns;
  if (v & A::kMtimeNow) img.mtime_ns = now;
  img.ctime_ns = (v & A::kCtime) ? a.ctime_ns : now;
  if (v & A::kSize) {
    LFS_RETURN_IF_ERROR(fs.Resize(ino, a.size, img));
  } else {
    Op op(fs);
    fs.StageAttrs(op, ino, img);
    op.Commit();
  }
  return fs.MakeEntry(ino);
}

// ---------------------------------------------------------------------------
// Open and create

namespace {

// An open for exec (kOpenExec) asks for execute permission instead of read,
// as the kernel's may_open(MAY_OPEN | MAY_EXEC) does: a program whose mode
// lets others execute but not read it (0711) can be run by them.
int AccessMask(int flags) {
  int mask = 0;
  switch (flags & O_ACCMODE) {
    case O_RDONLY:
      mask = (flags & kOpenExec) ? X_OK : R_OK;
      break;
    case O_WRONLY:
      mask = W_OK;
      break;
    default:
      mask = R_OK | W_OK;
      break;
  }
  if (flags & O_TRUNC) mask |= W_OK;
  return mask;
}

// The part of open that checks and truncates.
Result<Entry> OpenLocked(Filesystem::Impl& fs, const Cred& c, Ino ino, int flags) REQUIRES(fs.mu_) {
  LFS_ASSIGN_OR_RETURN(Node * n, fs.Get(ino));
  const int mask = AccessMask(flags);
  if (n->dir && (mask & W_OK)) return Status::Error(EISDIR);
  // Only regular files are executed (do_open_execat).
  if ((flags & kOpenExec) && !S_ISREG(fs.I(ino)->mode)) return Status::Error(EACCES);
  if ((mask & W_OK) && fs.read_only_) return Status::Error(EROFS);
  // inode_permission refuses writing an immutable file before the mode
  // bits are asked; may_open refuses an append-only one writing without
  // O_APPEND, and O_TRUNC, after them.
  if (mask & W_OK) LFS_RETURN_IF_ERROR(fs.CheckMutable(ino));
  LFS_RETURN_IF_ERROR(fs.Require(c, ino, mask));
  if (fs.AppendOnly(ino) &&
      ((flags & O_TRUNC) || ((flags & O_ACCMODE) != O_RDONLY && !(flags & O_APPEND))))
    return Status::Error(EPERM, "append-only: open for writing with O_APPEND, without O_TRUNC");
  if ((flags & O_TRUNC) && S_ISREG(fs.I(ino)->mode)) {
    if (const uint64_t size = fs.I(ino)->size; size > 0)
      LFS_RETURN_IF_ERROR(fs.GuardChange(c, SizeChange(ino, size, 0)));
    fs.DropPrivs(c, ino);
    Inode img = *fs.I(ino);
    const int64_t now = NowNs();
    img.mtime_ns = img.ctime_ns = now;
    LFS_RETURN_IF_ERROR(fs.Resize(ino, 0, img));
  }
  return fs.MakeEntry(ino);
}

}  // namespace

Result<Entry> Filesystem::Open(const Cred& c, Ino ino, int flags) {
  WriterLock l(&impl_->mu_);
  return OpenLocked(*impl_, c, ino, flags);
}

Result<Entry> Filesystem::Create(const Cred& c, Ino parent, std::string_view name, mode_t mode,
                                 int flags) {
  Impl& fs = *impl_;
  WriterLock l(&fs.mu_);
  LFS_ASSIGN_OR_RETURN(Node * p, fs.GetDir(parent));
  if (name.size() > kMaxName) return Status::Error(ENAMETOOLONG);
  LFS_RETURN_IF_ERROR(fs.Require(c, parent, X_OK));
  if (auto e = p->dir->Find(name)) {
    if (flags & O_EXCL) return Status::Error(EEXIST);
    LFS_ASSIGN_OR_RETURN(Entry opened, OpenLocked(fs, c, e->ino, flags));
    fs.N(e->ino)->refs.fetch_add(1);
    return opened;
  }
  // A file this call creates may be opened as asked whatever its mode says.
  return fs.CreateNode(c, parent, name, S_IFREG | (mode & 07777), 0, {});
}

// ---------------------------------------------------------------------------
// Preallocation

Status Filesystem::Impl::Preallocate(Ino ino, int mode, uint64_t off, uint64_t len) {
  Node* n = N(ino);
  const uint64_t end = off + len, fb = off / kBlock, lb = (end - 1) / kBlock;

  uint64_t hole_blocks = 0;
  for (const FileRun& r : Survey(n->extents, fb, lb - fb + 1))
    hole_blocks += r.kind == FileRun::kHole ? r.length : 0;
  if (hole_blocks > AvailableBlocks()) return Status::Error(ENOSPC, "pool is full");
  const uint64_t old_size = I(ino)->size;
  if (!(mode & FALLOC_FL_KEEP_SIZE) && end > old_size)
    LFS_RETURN_IF_ERROR(ZeroRange(ino, old_size, std::min(RoundUp(old_size), end)));

  // Map the holes a chunk at a time, so a huge preallocation over fragmented
  // space never needs more journal than one transaction holds. A crash part
  // way leaves part of the range preallocated, which is harmless.
  constexpr uint64_t kChunk = 16384;
  for (uint64_t at = fb; at <= lb; at += kChunk) {
    const uint64_t cnt = std::min(kChunk, lb + 1 - at);
    Op op(*this);
    std::vector<std::pair<FileRun, std::vector<BlockRange>>> plan;
    size_t pieces = 0;
    for (const FileRun& r : Survey(n->extents, at, cnt)) {
      if (r.kind != FileRun::kHole) continue;
      std::vector<BlockRange> got;
      LFS_RETURN_IF_ERROR(op.Reserve(r.length, GoalFor(n->extents, r.file_block), &got));
      pieces += got.size();
      plan.emplace_back(r, std::move(got));
    }
    LFS_RETURN_IF_ERROR(PlanSlots(op, ino, pieces));
    AddPlannedSlots(op, ino);
    Inode img = *I(ino);
    for (auto& [r, got] : plan) {
      uint64_t fblk = r.file_block;
      for (const BlockRange& g : got) {
        n->extents.Insert(op.tx, Mapping{fblk, g.start, g.count, kExtentUnwritten});
        op.Claim(g);
        img.blocks += g.count;
        fblk += g.count;
      }
    }
    if (at + cnt > lb) {  // the last chunk carries the size and times
      const int64_t now = NowNs();
      if (!(mode & FALLOC_FL_KEEP_SIZE) && end > img.size) img.size = end;
      img.mtime_ns = img.ctime_ns = now;
    }
    StageAttrs(op, ino, img);
    op.Commit();
  }
  return Status::Ok();
}

// ---------------------------------------------------------------------------
// SEEK_DATA / SEEK_HOLE

Result<uint64_t> Filesystem::Lseek(Ino ino, uint64_t off, int whence) {
  Impl& fs = *impl_;
  ReaderLock l(&fs.mu_);
  LFS_ASSIGN_OR_RETURN(Node * n, fs.Get(ino));
  if (whence != SEEK_DATA && whence != SEEK_HOLE) return Status::Error(EINVAL);
  const uint64_t size = fs.I(ino)->size;
  if (off >= size) return Status::Error(ENXIO);
  uint64_t at = off;
  // Walk written mappings from `off`; unwritten ones read as zeros and count
  // as holes, as on XFS and ext4.
  for (auto m = n->extents.NextFrom(off / kBlock); m; m = n->extents.NextFrom(m->file_end())) {
    const uint64_t mb = m->file_block * kBlock, me = m->file_end() * kBlock;
    if (m->unwritten()) continue;
    if (whence == SEEK_DATA) {
      const uint64_t d = std::max(at, mb);
      if (d >= size) break;
      return d;
    }
    if (mb > at) return std::min(at, size);  // a hole before this mapping
    at = std::max(at, me);
    if (at >= size) return size;
  }
  if (whence == SEEK_DATA) return Status::Error(ENXIO);
  return std::min(at, size);
}

}  // namespace leasefs::engine
