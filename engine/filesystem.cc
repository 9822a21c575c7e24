// Mount, unmount, and the machinery every operation shares: the Op
// transaction helper, permission checks, inode allocation and freeing.
#include <dirent.h>
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cassert>
#include <chrono>
#include <cstring>

#include <sys/mman.h>

#include "base/clock.h"
#include "engine/filesystem_impl.h"
#include "engine/superblock.h"

namespace leasefs::engine {

using namespace layout;

// ---------------------------------------------------------------------------
// Cred

bool Cred::InGroup(gid_t g) const {
  if (g == gid_) return true;
  if (!groups_) groups_ = fetch_groups_ ? fetch_groups_() : std::vector<gid_t>{};
  for (gid_t x : *groups_)
    if (x == g) return true;
  return false;
}

unsigned ModeToDtype(uint32_t mode) { return IFTODT(mode); }

// ---------------------------------------------------------------------------
// Op

Op::~Op() {
  if (committed_) return;
  for (const BlockRange& r : reserved_) alloc().Free(r);
}

Status Op::Reserve(uint64_t count, uint64_t goal, std::vector<BlockRange>* out, Use use) {
  std::vector<BlockRange> got;
  const uint64_t avail = use == Use::kExtentChain ? alloc().free_blocks() : available();
  if (avail < count) return Status::Error(ENOSPC, "pool is full");
  const uint64_t n = alloc().Allocate(count, goal, &got);
  reserved_.insert(reserved_.end(), got.begin(), got.end());
  if (n < count) return Status::Error(ENOSPC, "pool is full");
  Cover(got);
  out->insert(out->end(), got.begin(), got.end());
  return Status::Ok();
}

uint64_t Op::ReserveUpTo(uint64_t count, uint64_t goal, std::vector<BlockRange>* out) {
  std::vector<BlockRange> got;
  const uint64_t n = alloc().Allocate(std::min(count, available()), goal, &got);
  reserved_.insert(reserved_.end(), got.begin(), got.end());
  Cover(got);
  out->insert(out->end(), got.begin(), got.end());
  return n;
}

void Op::Cover(const std::vector<BlockRange>& got) {
  uint64_t end = 0;
  for (const BlockRange& r : got) end = std::max(end, r.end());
  fs_.CoverRefcounts(end);
}

void Op::Claim(const BlockRange& r) {
  tx.Fill32(fs_.pool_.refcount(r.start), 1, r.count);
  claimed_ += r.count;
}

void Op::Unref(const BlockRange& r) {
  // Netted with the op's other changes (StageDeltas): a file may map one
  // block twice (a clone within the file), and freeing both extents in one
  // op must drop two references, not read the same committed count twice.
  AddRefs(r, -1);
}

size_t Op::room() const {
  const size_t used = tx.body_bytes();
  return used >= fs_.journal_->capacity() ? 0 : fs_.journal_->capacity() - used;
}

void Op::StageDeltas() {
  // Sweep the deltas' boundaries in block order; between two boundaries
  // every block has the same net delta.
  std::vector<std::pair<uint64_t, int>> edges;
  edges.reserve(deltas_.size() * 2);
  for (const auto& [r, d] : deltas_) {
    edges.emplace_back(r.start, d);
    edges.emplace_back(r.end(), -d);
  }
  std::sort(edges.begin(), edges.end());
  int net = 0;
  for (size_t i = 0; i < edges.size();) {
    const uint64_t at = edges[i].first;
    while (i < edges.size() && edges[i].first == at) net += edges[i++].second;
    if (net == 0 || i == edges.size()) continue;
    const uint64_t end = edges[i].first;
    uint32_t* rc = fs_.pool_.refcount(at);
    for (uint64_t j = 0; j < end - at;) {
      const uint32_t v = rc[j];
      uint64_t k = j + 1;
      while (k < end - at && rc[k] == v) ++k;
      assert(static_cast<int64_t>(v) + net >= 0);
      const uint32_t nv = static_cast<uint32_t>(static_cast<int64_t>(v) + net);
      if (nv == 0) {
        StageLastRef({at + j, k - j});
      } else {
        tx.Fill32(rc + j, nv, k - j);
      }
      j = k;
    }
  }
  deltas_.clear();
}

void Op::StageLastRef(const BlockRange& r) {
  // The one place where blocks lose their last reference. A block that a
  // reach record covers may still be reached by a DAX mapping (a revoked or
  // slow holder's late store): it keeps refcount 1, held by the quarantine,
  // and is given to no file until DropReach. The others are free after the
  // commit.
  uint32_t* rc = fs_.pool_.refcount(r.start);
  covered().ForEachPart(r, [&](BlockRange part, bool is_covered) {
    tx.Fill32(rc + (part.start - r.start), is_covered ? 1u : 0u, part.count);
    (is_covered ? quarantine_ : freed_).push_back(part);
  });
}

void Op::FreeQuarantined(const BlockRange& r) {
  tx.Fill32(fs_.pool_.refcount(r.start), 0, r.count);
  freed_.push_back(r);
  // At once, so that records of one op that overlap free a block only once.
  quarantined().Erase(r);
}

void Op::Unreserve(const BlockRange& r) {
  auto it = std::find(reserved_.begin(), reserved_.end(), r);
  assert(it != reserved_.end());
  reserved_.erase(it);
  alloc().Free(r);
}

void Op::Commit() {
  if (!deltas_.empty()) StageDeltas();
  uint64_t reserved = 0;
  for (const BlockRange& r : reserved_) reserved += r.count;
  assert(reserved == claimed_ && "every reserved block must be used by the commit");
  (void)reserved;
  fs_.journal_->Commit(tx);
  committed_ = true;
  for (const BlockRange& r : quarantine_) quarantined().Insert(r);
  for (const BlockRange& r : freed_) alloc().Free(r);
  for (auto& [ino, set] : xattr_sets) {
    Node* n = fs_.N(ino);
    assert(n && "xattrs staged for an inode the op gave no node");
    if (n) n->xattrs = std::move(set);
  }
}

// ---------------------------------------------------------------------------
// Impl: lookups and permissions

Filesystem::Impl::Impl(std::unique_ptr<Media> media, const MountOptions& opts)
    : media_(std::move(media)),
      read_only_(opts.read_only),
      mapped_read_only_(opts.read_only),
      options_(opts) {
  pool_.media = media_.get();
  pool_.sb = reinterpret_cast<const Superblock*>(media_->base());
  void* z = mmap(nullptr, kZeroBytes, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  zeros_ = z == MAP_FAILED ? static_cast<const char*>(calloc(1, kZeroBytes))
                           : static_cast<const char*>(z);
}

uint64_t Filesystem::Impl::AvailableBlocks() const {
  const uint64_t free = alloc_.free_blocks();
  return free > reserve_blocks_ ? free - reserve_blocks_ : 0;
}

Result<Node*> Filesystem::Impl::Get(Ino ino) const {
  Node* n = N(ino);
  if (!n) return Status::Error(ENOENT, "no inode " + std::to_string(ino));
  return n;
}

Result<Node*> Filesystem::Impl::GetDir(Ino ino) const {
  LFS_ASSIGN_OR_RETURN(Node * n, Get(ino));
  if (!n->dir) return Status::Error(ENOTDIR);
  return n;
}

void Filesystem::Impl::FillStat(Ino ino, struct stat* st) const {
  const Inode& in = *I(ino);
  *st = {};
  st->st_ino = ino;
  st->st_mode = in.mode;
  st->st_nlink = in.nlink;
  st->st_uid = in.uid;
  st->st_gid = in.gid;
  st->st_rdev = in.rdev;
  st->st_size = static_cast<off_t>(in.size);
  st->st_blksize = kBlockSize;
  st->st_blocks = static_cast<blkcnt_t>(in.blocks * (kBlockSize / 512));
  st->st_atim = NsToTimespec(__atomic_load_n(&in.atime_ns, __ATOMIC_RELAXED));
  st->st_mtim = NsToTimespec(__atomic_load_n(&in.mtime_ns, __ATOMIC_RELAXED));
  st->st_ctim = NsToTimespec(__atomic_load_n(&in.ctime_ns, __ATOMIC_RELAXED));
}

Entry Filesystem::Impl::MakeEntry(Ino ino) const {
  Entry e;
  FillStat(ino, &e.attr);
  e.generation = I(ino)->generation ^ generation_salt_;
  e.btime_ns = I(ino)->btime_ns;
  e.attr_flags = FsFlagsOf(*I(ino));
  return e;
}

bool Filesystem::Impl::MayAccess(const Cred& c, Ino ino, int mask) const {
  const Inode& in = *I(ino);
  mask &= 7;
  if (c.is_root()) {
    // Root reads, writes and searches anything; it executes only what has an
    // execute bit for someone.
    return !(mask & X_OK) || S_ISDIR(in.mode) || (in.mode & 0111);
  }
  uint32_t mode = in.mode;
  // As the kernel's acl_permission_check: the owner's bits decide for the
  // owner, ACL or not; an ACL is consulted only when the group bits (its
  // mask) grant something, so with a mask of --- a named user gets the
  // other bits, as on ext4.
  if (c.uid() == in.uid) return (mask & ~(mode >> 6) & 7) == 0;
  if (mode & S_IRWXG) {
    bool decided;
    const bool ok = AclPermits(c, ino, mask, &decided);
    if (decided) return ok;
  }
  if ((mask & (mode ^ (mode >> 3))) && c.InGroup(in.gid)) {
    // Group membership only matters when group and other bits differ for the
    // bits asked about (and asking may mean reading /proc).
    mode >>= 3;
  }
  return (mask & ~mode & 7) == 0;
}

Status Filesystem::Impl::Require(const Cred& c, Ino ino, int mask) const {
  return MayAccess(c, ino, mask) ? Status::Ok() : Status::Error(EACCES);
}

Status Filesystem::Impl::CheckSticky(const Cred& c, Ino dir, Ino victim) const {
  const Inode& d = *I(dir);
  if (!(d.mode & S_ISVTX) || c.is_root()) return Status::Ok();
  if (c.uid() == I(victim)->uid || c.uid() == d.uid) return Status::Ok();
  return Status::Error(EPERM, "sticky directory");
}

Status Filesystem::Impl::MayModifyDir(const Cred& c, Ino dir) const {
  if (I(dir)->nlink == 0) return Status::Error(ENOENT, "directory was removed");
  // Before the permission bits, as inode_permission's MAY_WRITE check.
  LFS_RETURN_IF_ERROR(CheckMutable(dir));
  return Require(c, dir, W_OK | X_OK);
}

// ---------------------------------------------------------------------------
// Impl: staging helpers

void Filesystem::Impl::StageAttrs(Op& op, Ino ino, const Inode& img) {
  op.tx.Copy(I(ino), &img, offsetof(Inode, xattr_block));
}

Status Filesystem::Impl::PlanSlots(Op& op, Ino ino, size_t slots) {
  // Slots already promised to this op for the same inode count too.
  size_t planned = 0;
  for (auto& [i, b] : op.chain_blocks) planned += i == ino ? kExtentsPerBlock : 0;
  const ExtentMap& em = N(ino)->extents;
  if (em.free_slots() + planned >= slots) return Status::Ok();
  const uint64_t need = em.ChainBlocksFor(slots - planned);
  std::vector<BlockRange> got;
  const uint64_t goal = em.chain().empty() ? 0 : em.chain().back() + 1;
  LFS_RETURN_IF_ERROR(op.Reserve(need, goal, &got, Op::Use::kExtentChain));
  for (const BlockRange& r : got)
    for (uint64_t b = r.start; b < r.end(); ++b) op.chain_blocks.emplace_back(ino, b);
  return Status::Ok();
}

void Filesystem::Impl::AddPlannedSlots(Op& op, Ino ino) {
  auto& cb = op.chain_blocks;
  for (auto it = cb.begin(); it != cb.end();) {
    if (it->first != ino) {
      ++it;
      continue;
    }
    N(ino)->extents.AddChainBlock(op.tx, it->second);
    op.Claim({it->second, 1});
    it = cb.erase(it);
  }
}

Result<Directory::Spot> Filesystem::Impl::PlanInsert(Op& op, Ino dir, std::string_view name) {
  const Directory::Spot spot = N(dir)->dir->FindSpot(name.size());
  if (spot.new_block) {
    if (I(dir)->size + kBlockSize > (uint64_t{UINT32_MAX} / kDirSlotsPerBlock) * kBlockSize)
      return Status::Error(ENOSPC, "directory is too large");
    LFS_RETURN_IF_ERROR(PlanSlots(op, dir, ExtentMap::kSlotsPerInsert));
    const auto& pb = N(dir)->dir->pool_blocks();
    std::vector<BlockRange> got;
    LFS_RETURN_IF_ERROR(op.Reserve(1, pb.empty() ? 0 : pb.back() + 1, &got));
    op.dir_blocks.emplace_back(dir, got[0].start);
  }
  return spot;
}

void Filesystem::Impl::InsertEntry(Op& op, Ino dir, Inode* dir_img, const Directory::Spot& spot,
                                   std::string_view name, Ino ino, unsigned type) {
  Node* d = N(dir);
  if (spot.new_block) {
    auto it = std::find_if(op.dir_blocks.begin(), op.dir_blocks.end(),
                           [dir](const auto& p) { return p.first == dir; });
    assert(it != op.dir_blocks.end());
    const uint64_t block = it->second;
    op.dir_blocks.erase(it);
    AddPlannedSlots(op, dir);
    d->dir->AddBlock(block);
    d->extents.Insert(op.tx, Mapping{spot.pos.block, block, 1, 0});
    op.Claim({block, 1});
    dir_img->size += kBlockSize;
    dir_img->blocks += 1;
  }
  d->dir->Insert(op.tx, spot, name, ino, type);
}

// ---------------------------------------------------------------------------
// Impl: inode lifetime

Result<Ino> Filesystem::Impl::AllocInode() {
  if (free_inodes_.empty()) LFS_RETURN_IF_ERROR(GrowInodeTable());
  const Ino ino = *free_inodes_.begin();
  free_inodes_.erase(free_inodes_.begin());
  return ino;
}

Node* Filesystem::Impl::AddNode(Ino ino, uint32_t mode, bool inline_data) {
  nodes_[ino] = std::make_unique<Node>();
  Node* n = nodes_[ino].get();
  n->extents.InitEmpty(pool_, ino, !inline_data);
  if (S_ISDIR(mode)) {
    n->dir = std::make_unique<Directory>();
    n->dir->InitEmpty(pool_, ino);
  }
  return n;
}

void Filesystem::Impl::MaybeFree(Ino ino) {
  Node* n = N(ino);
  if (n && I(ino)->nlink == 0 && n->refs.load() == 0) FreeInode(ino);
}

void Filesystem::Impl::TruncateBlocks(Ino ino, uint64_t from,
                                      const std::function<void(Op&)>& stage_first,
                                      const std::function<void(Op&)>& stage_last) {
  // Journal bytes one removed extent may cost: a slot record and a refcount
  // record, with their headers, and slack for a split.
  constexpr size_t kCostPerExtent = 128;
  Node* n = N(ino);
  const bool dir = S_ISDIR(I(ino)->mode);
  bool first = true;
  // Each round removes extents from the end while the journal has room, so
  // a file of any size is freed. Every intermediate state is consistent: a
  // file's remaining blocks just lie past its end; a directory's size
  // shrinks with its blocks.
  for (;;) {
    Op op(*this);
    if (first && stage_first) stage_first(op);
    first = false;
    const std::vector<Mapping> all = n->extents.Overlapping(from, UINT64_MAX - from);
    const size_t budget = op.room() > 8192 ? op.room() - 8192 : 0;
    const size_t fit = std::min(all.size(), std::max<size_t>(1, budget / kCostPerExtent));
    const bool last_round = fit == all.size();
    if (!all.empty()) {
      const uint64_t cut = last_round ? from : all[all.size() - fit].file_block;
      std::vector<Mapping> removed;
      n->extents.Remove(op.tx, cut, UINT64_MAX - cut, &removed);
      uint64_t blocks = I(ino)->blocks;
      for (const Mapping& m : removed) {
        op.Unref({m.pool_block, m.length});
        blocks -= m.length;
      }
      op.tx.Put(&I(ino)->blocks, blocks);
      if (dir) op.tx.Put(&I(ino)->size, uint64_t{cut} * kBlockSize);
    }
    if (last_round) {
      std::vector<uint64_t> chain;
      n->extents.TrimChain(op.tx, &chain);
      for (uint64_t b : chain) op.Unref({b, 1});
      if (stage_last) stage_last(op);
    }
    op.Commit();
    if (last_round) return;
  }
}

void Filesystem::Impl::FreeInode(Ino ino) {
  // The inode goes in the same transaction as its last blocks, so nobody
  // (fsck after a crash included) sees an inode missing blocks its type
  // needs, such as a symlink without its target.
  FreeXattrs(ino);
  TruncateBlocks(ino, 0, nullptr, [&](Op& op) {
    if (const uint64_t xb = I(ino)->xattr_block) op.Unref({xb, 1});
    // Zero the slot except its generation, which the next owner increments.
    Inode img{};
    img.generation = I(ino)->generation;
    op.tx.Put(I(ino), img);
  });
  nodes_[ino].reset();
  free_inodes_.insert(ino);
}

// ---------------------------------------------------------------------------
// Impl: data helper

Status Filesystem::Impl::ZeroRange(Ino ino, uint64_t from, uint64_t to) {
  if (from >= to) return Status::Ok();
  const uint64_t fb = from >> kBlockShift, lb = (to - 1) >> kBlockShift;
  for (const Mapping& m : N(ino)->extents.Overlapping(fb, lb - fb + 1)) {
    if (!m.unwritten() && AnyShared(m.pool_block, m.length))
      LFS_RETURN_IF_ERROR(Unshare(ino, m.file_block, m.length));
  }
  for (const Mapping& m : N(ino)->extents.Overlapping(fb, lb - fb + 1)) {
    if (m.unwritten()) continue;
    const uint64_t b = std::max(from, m.file_block << kBlockShift);
    const uint64_t e = std::min(to, m.file_end() << kBlockShift);
    char* p = pool_.BlockPtr(m.pool_block) + (b - (m.file_block << kBlockShift));
    media_->SetFlush(p, 0, e - b);
  }
  media_->Drain();
  return Status::Ok();
}

uint64_t Filesystem::Impl::SharedBlocks(uint64_t pool_block, uint64_t count) const {
  const uint32_t* rc = pool_.refcount(pool_block);
  uint64_t n = 0;
  for (uint64_t i = 0; i < count; ++i) n += rc[i] > 1;
  return n;
}

bool Filesystem::Impl::AnyShared(uint64_t pool_block, uint64_t count) const {
  const uint32_t* rc = pool_.refcount(pool_block);
  for (uint64_t i = 0; i < count; ++i)
    if (rc[i] > 1) return true;
  return false;
}

// ---------------------------------------------------------------------------
// Mount

namespace {

bool KnownFileType(uint32_t mode) {
  switch (mode & S_IFMT) {
    case S_IFREG:
    case S_IFDIR:
    case S_IFLNK:
    case S_IFCHR:
    case S_IFBLK:
    case S_IFIFO:
    case S_IFSOCK:
      return true;
    default:
      return false;
  }
}

Status BadInode(Ino ino, const std::string& what) {
  return Status::Corruption("inode " + std::to_string(ino) + ": " + what);
}

// Checks what a single inode must satisfy by its type (docs/pool_format.md,
// "Inodes").
Status CheckInodeShape(Ino ino, const Inode& in, const ExtentMap& em, uint64_t slots) {
  if (!KnownFileType(in.mode)) return BadInode(ino, "unknown file type");
  if (in.blocks != em.mapped_blocks()) return BadInode(ino, "block count does not match extents");
  if (in.size > kMaxFileSize) return BadInode(ino, "size beyond the maximum");
  const uint32_t type = in.mode & S_IFMT;
  if (type == S_IFDIR) {
    if (in.parent == 0 || in.parent >= slots) return BadInode(ino, "bad parent");
    if (in.flags & ~kDirAttrFlags) return BadInode(ino, "flags a directory cannot carry");
    return Status::Ok();
  }
  if (type == S_IFLNK) {
    if (in.size == 0 || in.size > kMaxSymlink) return BadInode(ino, "bad symlink length");
    if (in.flags & kInodeInlineData) {
      if (in.size > kInodeInlineBytes || in.extent_block != 0)
        return BadInode(ino, "bad inline symlink");
    } else if (em.extent_count() != 1 || em.end_block() != 1 || em.mapped_blocks() != 1) {
      return BadInode(ino, "symlink target block missing");
    }
    return Status::Ok();
  }
  if (type != S_IFREG && (!em.empty() || in.size != 0))
    return BadInode(ino, "special file with data");
  if (in.flags & kInodeInlineData) return BadInode(ino, "inline data on a non-symlink");
  if (in.flags & ~(type == S_IFREG ? kRegularAttrFlags : 0u))
    return BadInode(ino, "flags its type cannot carry");
  return Status::Ok();
}

}  // namespace

Status Filesystem::Impl::Load(MountReport* report) {
  const auto t0 = std::chrono::steady_clock::now();
  // Nobody else sees the engine yet; the lock is for what it guards
  // (free_inodes_, alloc_) and what the orphan pass below requires.
  WriterLock l(&mu_);
  const Superblock& sb = *pool_.sb;
  FinishTornUpgrade();
  LFS_RETURN_IF_ERROR(ValidateSuperblock(sb, media_->size()));
  if ((sb.feature_ro_compat & ~kKnownRoCompat) != 0 && !read_only_)
    return Status::Error(EROFS, "pool has features this leasefs can only mount read-only");
  report->was_clean = sb.state != kStateMounted;
  for (size_t i = 0; i < sizeof(sb.uuid); i += 4) {
    uint32_t word;
    std::memcpy(&word, sb.uuid + i, 4);
    generation_salt_ ^= word;
  }

  journal_ = std::make_unique<Journal>(*media_, sb);
  LFS_ASSIGN_OR_RETURN(report->journal_replayed, journal_->Recover());
  LFS_RETURN_IF_ERROR(LoadMarks());
  // Only the initialized slots are read: what lies beyond the mark is free.
  const uint64_t slots = marks_.inodes;

  // Inodes and their extents.
  nodes_.resize(slots);
  for (Ino ino = 1; ino < slots; ++ino) {
    const Inode& in = *I(ino);
    if (in.mode == 0) {
      free_inodes_.insert(free_inodes_.end(), ino);
      continue;
    }
    nodes_[ino] = std::make_unique<Node>();
    Node* n = nodes_[ino].get();
    LFS_RETURN_IF_ERROR(n->extents.Load(pool_, ino));
    LFS_RETURN_IF_ERROR(CheckInodeShape(ino, in, n->extents, slots));
    if (in.xattr_block != 0) {
      n->xattrs = std::make_unique<XattrSet>();
      LFS_RETURN_IF_ERROR(n->xattrs->Load(pool_, ino, in.xattr_block));
      if (!n->xattrs->single() && !(sb.feature_incompat & kIncompatXattrLeaves))
        return BadInode(ino, "xattr leaves in a pool without the feature bit for them");
    }
  }
  if (!N(kRootIno) || !S_ISDIR(I(kRootIno)->mode) || I(kRootIno)->parent != kRootIno)
    return Status::Corruption("root inode is not a directory");

  // Directories, and the link counts they imply.
  std::vector<uint32_t> names(slots, 0);    // entries naming each inode
  std::vector<uint32_t> subdirs(slots, 0);  // subdirectories of each dir
  for (Ino ino = 1; ino < slots; ++ino) {
    Node* n = N(ino);
    if (!n || !S_ISDIR(I(ino)->mode)) continue;
    n->dir = std::make_unique<Directory>();
    LFS_RETURN_IF_ERROR(n->dir->Load(pool_, ino, n->extents));
    for (auto e = n->dir->Next({0, 1}); e; e = n->dir->Next({e->pos.block, e->pos.slot + 1})) {
      if (e->ino >= slots)
        return Status::Corruption("directory " + std::to_string(ino) + ": entry '" +
                                  std::string(e->name) + "' names inode " + std::to_string(e->ino) +
                                  ", past the inode table's mark (" + std::to_string(slots) +
                                  " slots): run fsck.leasefs -y");
      const Node* t = N(e->ino);
      if (!t || ModeToDtype(I(e->ino)->mode) != e->type || I(e->ino)->nlink == 0)
        return Status::Corruption("directory " + std::to_string(ino) + ": entry '" +
                                  std::string(e->name) + "' names a missing inode");
      ++names[e->ino];
      if (e->type == DT_DIR) {
        if (I(e->ino)->parent != ino || e->ino == kRootIno)
          return BadInode(e->ino, "directory named from the wrong parent");
        ++subdirs[ino];
      }
    }
  }
  for (Ino ino = 1; ino < slots; ++ino) {
    if (!N(ino)) continue;
    const Inode& in = *I(ino);
    const bool dir = S_ISDIR(in.mode);
    const uint32_t want = dir ? (in.nlink == 0 ? 0 : 2 + subdirs[ino]) : names[ino];
    const uint32_t named = dir ? (ino == kRootIno ? 1 : names[ino]) : names[ino];
    if (in.nlink != want || (dir && in.nlink != 0 && named != 1) || (in.nlink == 0 && names[ino]))
      return BadInode(ino, "link count " + std::to_string(in.nlink) + " does not match the " +
                               std::to_string(names[ino]) + " entries naming it");
  }

  LFS_RETURN_IF_ERROR(LoadReach());
  LFS_RETURN_IF_ERROR(CheckRefcounts());
  alloc_.Init(sb.data_start, sb.data_blocks, pool_.refcount(sb.data_start),
              CoveredEnd() - sb.data_start);
  // About 0.2% of the data area, as ext4 keeps reserved clusters for the
  // metadata that converting preallocated space needs.
  reserve_blocks_ =
      options_.reserve_blocks.value_or(std::clamp<uint64_t>(sb.data_blocks / 512, 16, 4096));

  // Orphans: unlinked while open when the last daemon stopped.
  if (!read_only_) {
    // A block-map change a crash interrupted is finished first: it may
    // still need the orphans' blocks (a clone from a deleted file).
    RecoverIntent();
    for (Ino ino = 1; ino < slots; ++ino) {
      if (N(ino) && I(ino)->nlink == 0) {
        FreeInode(ino);
        ++report->orphans_reclaimed;
      }
    }
  }
  for (Ino ino = 1; ino < slots; ++ino) report->inodes_in_use += N(ino) ? 1 : 0;

  if (!read_only_ && sb.version < kFormatVersion) {
    UpgradeFormat();
    report->upgraded = true;
  } else if (!read_only_) {
    // A copy of a mark that is damaged, or behind the other (a crash
    // between the two stores of a raise), is evened out now.
    const MarkCopies copies = ReadMarkCopies(media_->base(), sb);
    for (int i = 0; i < 2; ++i)
      if (copies.inodes[i] != marks_.inodes ||
          copies.refcount_blocks[i] != marks_.refcount_blocks) {
        StoreMarks(*media_, sb, marks_);
        break;
      }
  }
  report->inode_mark = marks_.inodes;
  report->refcount_mark = marks_.refcount_blocks;
  if (!read_only_) {
    auto* msb = reinterpret_cast<Superblock*>(media_->base());
    // The mutable area: single aligned 8-byte stores (state + reserved1
    // together), persisted; a hint for fsck, not part of any transaction.
    const uint64_t state_word = kStateMounted;
    std::memcpy(&msb->state, &state_word, sizeof(state_word));
    msb->mount_count = sb.mount_count + 1;
    msb->last_mount_ns = NowNs();
    media_->Persist(&msb->state, 32);
  }
  report->seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return Status::Ok();
}

void Filesystem::Impl::FinishTornUpgrade() {
  // Read-only too: the pool is then mapped privately, so the restored
  // primary stays in this process, as a replayed journal does. (Refusing
  // it would leave a pool that only a writable mount or fsck -y reads.)
  const auto* primary = reinterpret_cast<const Superblock*>(media_->base());
  const auto* backup =
      reinterpret_cast<const Superblock*>(media_->base() + kBackupSuperBlock * kBlockSize);
  if (!IsTornUpgrade(*primary, *backup)) return;
  WriteSuperblockCopy(*media_, kSuperBlock, *backup);
}

Status Filesystem::Impl::CheckRefcounts() {
  // Every data block's refcount must equal the references to it. A pool
  // whose table disagrees would hand out blocks that are still in use.
  // Only the blocks below the refcount mark can be referenced: the ones
  // above it are free.
  const Superblock& sb = *pool_.sb;
  const uint64_t covered = CoveredEnd() - sb.data_start;
  const uint64_t mark = marks_.refcount_blocks;
  std::vector<uint32_t> refs(covered, 0);
  auto add = [&](uint64_t block, uint64_t count) -> Status {
    if (!pool_.InData(block, count)) return Status::Corruption("reference outside the data area");
    if (block + count > sb.data_start + covered)
      return Status::Corruption("block " + std::to_string(block + count - 1) +
                                " is referenced but lies past the refcount table's mark (" +
                                std::to_string(mark) + " refcount blocks): run fsck.leasefs -y");
    for (uint64_t b = block; b < block + count; ++b) ++refs[b - sb.data_start];
    return Status::Ok();
  };
  for (Ino ino = 1; ino < nodes_.size(); ++ino) {
    Node* n = N(ino);
    if (!n) continue;
    for (const Mapping& m : n->extents.All()) LFS_RETURN_IF_ERROR(add(m.pool_block, m.length));
    for (uint64_t b : n->extents.chain()) LFS_RETURN_IF_ERROR(add(b, 1));
    if (n->xattrs) {
      Status s = Status::Ok();
      n->xattrs->ForEachBlock([&](BlockRange r) {
        if (s.ok()) s = add(r.start, r.count);
      });
      LFS_RETURN_IF_ERROR(s);
    }
  }
  // A block a reach record covers and no file references is quarantined:
  // the quarantine holds its one reference (LoadReach has indexed the
  // records).
  for (const BlockRange& c : covered_.CoveredParts({sb.data_start, covered})) {
    for (uint64_t b = c.start; b < c.end();) {
      if (refs[b - sb.data_start] != 0) {
        ++b;
        continue;
      }
      uint64_t e = b;
      while (e < c.end() && refs[e - sb.data_start] == 0) refs[e++ - sb.data_start] = 1;
      quarantined_.Insert({b, e - b});
      b = e;
    }
  }
  const uint32_t* table = pool_.refcount(sb.data_start);
  for (uint64_t i = 0; i < covered; ++i) {
    if (table[i] != refs[i])
      return Status::Corruption("block " + std::to_string(sb.data_start + i) + ": refcount " +
                                std::to_string(table[i]) + " but " + std::to_string(refs[i]) +
                                " references");
  }
  return Status::Ok();
}

void Filesystem::Impl::MarkClean() {
  // A mount made read-only live was marked clean then (SetReadOnly).
  if (read_only_) return;
  WriteState(/*clean=*/true);
}

// ---------------------------------------------------------------------------
// Filesystem: lifetime and small calls

Filesystem::Filesystem(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Filesystem::~Filesystem() = default;

Result<std::unique_ptr<Filesystem>> Filesystem::Mount(std::unique_ptr<Media> media,
                                                      const MountOptions& opts,
                                                      MountReport* report) {
  MountReport local;
  if (!report) report = &local;
  *report = {};
  if (media->size() < kMinPoolBytes) return Status::Corruption("pool is too small");
  auto impl = std::make_unique<Impl>(std::move(media), opts);
  LFS_RETURN_IF_ERROR(impl->Load(report));
  return std::unique_ptr<Filesystem>(new Filesystem(std::move(impl)));
}

void Filesystem::Unmount() {
  WriterLock l(&impl_->mu_);
  impl_->MarkClean();
}

const Media& Filesystem::media() const { return *impl_->media_; }

void Filesystem::SetLayoutGuard(LayoutGuard* guard) {
  WriterLock l(&impl_->mu_);
  impl_->guard_ = guard;
}

void Filesystem::Ref(Ino ino, uint64_t n) {
  ReaderLock l(&impl_->mu_);  // the node may be freed under the writer lock
  if (Node* node = impl_->N(ino)) node->refs.fetch_add(n);
}

void Filesystem::Forget(Ino ino, uint64_t n) {
  WriterLock l(&impl_->mu_);
  Node* node = impl_->N(ino);
  if (!node) return;
  const uint64_t before = node->refs.load();
  node->refs.store(before > n ? before - n : 0);
  if (!impl_->read_only_) impl_->MaybeFree(ino);
}

Result<Entry> Filesystem::GetAttr(Ino ino) {
  ReaderLock l(&impl_->mu_);
  LFS_RETURN_IF_ERROR(impl_->Get(ino).status());
  return impl_->MakeEntry(ino);
}

Status Filesystem::Access(const Cred& c, Ino ino, int mask) {
  ReaderLock l(&impl_->mu_);
  LFS_RETURN_IF_ERROR(impl_->Get(ino).status());
  if (mask == F_OK) return Status::Ok();
  // Nobody may write an immutable file, root included (inode_permission).
  if (mask & W_OK) LFS_RETURN_IF_ERROR(impl_->CheckMutable(ino));
  return impl_->Require(c, ino, mask);
}

struct statvfs Filesystem::StatFs() {
  ReaderLock l(&impl_->mu_);
  const Superblock& sb = *impl_->pool_.sb;
  struct statvfs s {};
  s.f_bsize = kBlockSize;
  s.f_frsize = kBlockSize;
  s.f_blocks = sb.data_blocks;
  s.f_bfree = impl_->alloc_.free_blocks();
  s.f_bavail = impl_->AvailableBlocks();
  s.f_files = sb.inode_count - 1;
  // The slots past the inode mark are free too.
  s.f_ffree = impl_->free_inodes_.size() + (sb.inode_count - impl_->marks_.inodes);
  s.f_favail = s.f_ffree;
  uint64_t fsid;
  std::memcpy(&fsid, sb.uuid, sizeof(fsid));
  s.f_fsid = fsid;
  s.f_namemax = kMaxName;
  if (impl_->read_only_) s.f_flag |= ST_RDONLY;
  return s;
}

}  // namespace leasefs::engine
