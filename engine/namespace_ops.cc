// The namespace: lookup, create, link, unlink, rename, readdir.
//
// Each modifying call follows the plan / stage / commit pattern described in
// filesystem_impl.h. Checks come in the order Linux's VFS makes them, so the
// errno for a request that is wrong in several ways matches a local
// filesystem's: search permission on the way, then existence, then write
// permission, then the sticky bit, then type.
#include <dirent.h>
#include <fcntl.h>
#include <unistd.h>

#include <cassert>
#include <cstring>
#include <map>

#include <linux/fs.h>

#include "base/clock.h"
#include "engine/filesystem_impl.h"

namespace leasefs::engine {

using namespace layout;

namespace {

// Keeps an inode number reserved until the operation commits.
class InodeReservation {
 public:
  InodeReservation(std::set<Ino>& free, Ino ino) : free_(free), ino_(ino) {}
  ~InodeReservation() {
    if (ino_) free_.insert(ino_);
  }
  void Keep() { ino_ = 0; }

 private:
  std::set<Ino>& free_;
  Ino ino_;
};

// Modified copies of the inodes one operation touches, staged together.
class Images {
 public:
  explicit Images(Filesystem::Impl& fs) : fs_(fs) {}
  Inode& operator[](Ino ino) { return imgs_.try_emplace(ino, *fs_.I(ino)).first->second; }
  void Stage(Op& op) {
    for (auto& [ino, img] : imgs_) fs_.StageAttrs(op, ino, img);
  }

 private:
  Filesystem::Impl& fs_;
  std::map<Ino, Inode> imgs_;
};

Status RequireWritable(const Filesystem::Impl& fs) {
  return fs.read_only_ ? Status::Error(EROFS) : Status::Ok();
}

}  // namespace

Status Filesystem::Impl::CheckNewName(std::string_view name) const {
  if (name.size() > kMaxName) return Status::Error(ENAMETOOLONG);
  if (name == "." || name == "..") return Status::Error(EEXIST);
  if (!ValidName(name)) return Status::Error(EINVAL, "invalid name");
  return Status::Ok();
}

Inode Filesystem::Impl::NewInodeImage(const Cred& c, Ino parent, Ino ino, uint32_t mode,
                                      dev_t rdev, int64_t now) const {
  const bool is_dir = S_ISDIR(mode);
  const Inode& pin = *I(parent);
  Inode img{};
  // Never 0 (what a slot never allocated holds): past 2^32 - 1 it wraps to 1.
  img.generation = I(ino)->generation + 1;
  if (img.generation == 0) img.generation = 1;
  img.mode = mode;
  img.nlink = is_dir ? 2 : 1;
  img.uid = c.uid();
  img.gid = c.gid();
  if (pin.mode & S_ISGID) {  // setgid directories pass on their group
    img.gid = pin.gid;
    if (is_dir) {
      img.mode |= S_ISGID;
    } else if ((img.mode & (S_ISGID | S_IXGRP)) == (S_ISGID | S_IXGRP) && !c.is_root() &&
               !c.InGroup(pin.gid)) {
      img.mode &= ~S_ISGID;
    }
  }
  img.atime_ns = img.mtime_ns = img.ctime_ns = img.btime_ns = now;
  img.parent = is_dir ? parent : 0;
  img.flags = InheritedFlags(pin, mode);
  img.rdev = (S_ISCHR(mode) || S_ISBLK(mode)) ? rdev : 0;
  return img;
}

Result<Entry> Filesystem::Impl::CreateNode(const Cred& c, Ino parent, std::string_view name,
                                           uint32_t mode, dev_t rdev, std::string_view target) {
  LFS_RETURN_IF_ERROR(RequireWritable(*this));
  LFS_ASSIGN_OR_RETURN(Node * p, GetDir(parent));
  LFS_RETURN_IF_ERROR(CheckNewName(name));
  LFS_RETURN_IF_ERROR(Require(c, parent, X_OK));
  if (p->dir->Find(name)) return Status::Error(EEXIST);
  LFS_RETURN_IF_ERROR(MayModifyDir(c, parent));
  const bool is_dir = S_ISDIR(mode), is_link = S_ISLNK(mode);
  if (is_dir && I(parent)->nlink >= kMaxLinks) return Status::Error(EMLINK);
  // Device nodes need CAP_MKNOD, except a whiteout (a character device 0/0),
  // which anybody may make since Linux 5.8 (overlayfs makes them).
  if ((S_ISCHR(mode) || S_ISBLK(mode)) && !c.is_root() && !IsWhiteout(mode, rdev))
    return Status::Error(EPERM);
  if (is_link && target.empty()) return Status::Error(ENOENT, "empty symlink target");
  if (is_link && target.size() > kMaxSymlink) return Status::Error(ENAMETOOLONG);
  const bool inline_target = is_link && target.size() <= kInodeInlineBytes;

  // Plan.
  Op op(*this);
  LFS_ASSIGN_OR_RETURN(const Ino ino, AllocInode());
  InodeReservation hold(free_inodes_, ino);
  LFS_ASSIGN_OR_RETURN(const Directory::Spot spot, PlanInsert(op, parent, name));
  std::vector<BlockRange> target_block;
  if (is_link && !inline_target) LFS_RETURN_IF_ERROR(op.Reserve(1, 0, &target_block));

  // Stage the new inode.
  const int64_t now = NowNs();
  const Inode& pin = *I(parent);
  Inode img = NewInodeImage(c, parent, ino, mode, rdev, now);
  // The umask, or the parent's default ACL instead, narrows the permission
  // bits only once setgid is settled: the kernel strips setgid by the mode
  // asked for (mode_strip_sgid) before either applies.
  LFS_ASSIGN_OR_RETURN(const Inherited acls, InheritAcls(c, parent, &img.mode));
  if (is_link) img.size = target.size();
  if (inline_target) {
    img.flags |= kInodeInlineData;
    std::memcpy(img.inline_area, target.data(), target.size());
  }
  if (!target_block.empty()) img.blocks = 1;
  op.tx.Put(I(ino), img);
  // In the same transaction as the inode: a crash never leaves it with the
  // narrowed mode and without the ACL that says who else may use it.
  LFS_RETURN_IF_ERROR(StageXattrChanges(op, ino, acls.Changes()));
  Node* n = AddNode(ino, mode, inline_target);
  if (!target_block.empty()) {
    // A fresh block nothing points at yet: written in place, then mapped.
    const uint64_t b = target_block[0].start;
    media_->SetFlush(pool_.BlockPtr(b), 0, kBlockSize);
    media_->CopyFlush(pool_.BlockPtr(b), target.data(), target.size());
    n->extents.Insert(op.tx, Mapping{0, b, 1, 0});
    op.Claim({b, 1});
  }

  // Stage the entry and the parent's changes.
  Inode pimg = pin;
  InsertEntry(op, parent, &pimg, spot, name, ino, ModeToDtype(mode));
  if (is_dir) ++pimg.nlink;
  pimg.mtime_ns = pimg.ctime_ns = now;
  StageAttrs(op, parent, pimg);
  op.Commit();
  hold.Keep();
  n->refs.store(1);
  return MakeEntry(ino);
}

Result<Entry> Filesystem::Lookup(const Cred& c, Ino parent, std::string_view name) {
  ReaderLock l(&impl_->mu_);
  LFS_ASSIGN_OR_RETURN(Node * p, impl_->GetDir(parent));
  if (name.size() > kMaxName) return Status::Error(ENAMETOOLONG);
  LFS_RETURN_IF_ERROR(impl_->Require(c, parent, X_OK));
  Ino ino;
  if (name == ".") {
    ino = parent;
  } else if (name == "..") {
    ino = impl_->I(parent)->parent;
  } else {
    auto e = p->dir->Find(name);
    if (!e) return Status::Error(ENOENT);
    ino = e->ino;
  }
  Node* n = impl_->N(ino);
  if (!n) return Status::Error(ENOENT);
  n->refs.fetch_add(1);
  return impl_->MakeEntry(ino);
}

Result<Entry> Filesystem::Mknod(const Cred& c, Ino parent, std::string_view name, mode_t mode,
                                dev_t rdev) {
  switch (mode & S_IFMT) {
    case S_IFREG:
    case S_IFCHR:
    case S_IFBLK:
    case S_IFIFO:
    case S_IFSOCK:
      break;
    case 0:
      mode |= S_IFREG;  // mknod(2): a zero type means a regular file
      break;
    default:
      return Status::Error(EINVAL, "mknod of an unsupported file type");
  }
  WriterLock l(&impl_->mu_);
  return impl_->CreateNode(c, parent, name, mode & (S_IFMT | 07777), rdev, {});
}

Result<Entry> Filesystem::Mkdir(const Cred& c, Ino parent, std::string_view name, mode_t mode) {
  WriterLock l(&impl_->mu_);
  return impl_->CreateNode(c, parent, name, S_IFDIR | (mode & 07777), 0, {});
}

Result<Entry> Filesystem::Symlink(const Cred& c, Ino parent, std::string_view name,
                                  std::string_view target) {
  WriterLock l(&impl_->mu_);
  return impl_->CreateNode(c, parent, name, S_IFLNK | 0777, 0, target);
}

Result<Entry> Filesystem::Link(const Cred& c, Ino ino, Ino new_parent, std::string_view new_name) {
  Impl& fs = *impl_;
  WriterLock l(&fs.mu_);
  LFS_RETURN_IF_ERROR(RequireWritable(fs));
  LFS_ASSIGN_OR_RETURN(Node * n, fs.Get(ino));
  LFS_ASSIGN_OR_RETURN(Node * p, fs.GetDir(new_parent));
  LFS_RETURN_IF_ERROR(fs.CheckNewName(new_name));
  LFS_RETURN_IF_ERROR(fs.Require(c, new_parent, X_OK));
  if (p->dir->Find(new_name)) return Status::Error(EEXIST);
  LFS_RETURN_IF_ERROR(fs.MayModifyDir(c, new_parent));
  LFS_RETURN_IF_ERROR(fs.CheckRewritable(ino));  // vfs_link, before the type
  if (n->dir) return Status::Error(EPERM, "hard link to a directory");
  // An unlinked file stays unnamed (Linux: ENOENT), unless it is an
  // O_TMPFILE that was made linkable and has had no name yet.
  if (fs.I(ino)->nlink == 0 && !n->linkable.load())
    return Status::Error(ENOENT, "inode was unlinked");
  if (fs.I(ino)->nlink >= kMaxLinks) return Status::Error(EMLINK);

  Op op(fs);
  LFS_ASSIGN_OR_RETURN(const Directory::Spot spot, fs.PlanInsert(op, new_parent, new_name));
  const int64_t now = NowNs();
  Images img(fs);
  img[ino].nlink += 1;
  img[ino].ctime_ns = now;
  fs.InsertEntry(op, new_parent, &img[new_parent], spot, new_name, ino,
                 ModeToDtype(fs.I(ino)->mode));
  img[new_parent].mtime_ns = img[new_parent].ctime_ns = now;
  img.Stage(op);
  op.Commit();
  n->linkable.store(false);  // its first name: from now on an ordinary file
  n->refs.fetch_add(1);
  return fs.MakeEntry(ino);
}

Result<Entry> Filesystem::Tmpfile(const Cred& c, Ino parent, mode_t mode, int flags) {
  Impl& fs = *impl_;
  WriterLock l(&fs.mu_);
  LFS_RETURN_IF_ERROR(RequireWritable(fs));
  LFS_RETURN_IF_ERROR(fs.GetDir(parent).status());
  // vfs_tmpfile asks what a create in `parent` would: write and search. A
  // removed directory is no obstacle (as on ext4 and tmpfs): the file gets
  // no name there anyway, and none can be linked into it.
  LFS_RETURN_IF_ERROR(fs.CheckMutable(parent));  // before the bits, as inode_permission
  LFS_RETURN_IF_ERROR(fs.Require(c, parent, W_OK | X_OK));

  // One transaction stages the inode with no link and no entry: an orphan
  // from the start, which the next mount reclaims unless Link named it.
  Op op(fs);
  LFS_ASSIGN_OR_RETURN(const Ino ino, fs.AllocInode());
  InodeReservation hold(fs.free_inodes_, ino);
  Inode img = fs.NewInodeImage(c, parent, ino, S_IFREG | (mode & 07777), 0, NowNs());
  img.nlink = 0;
  // As any create (ext4_tmpfile): the umask or the parent's default ACL.
  LFS_ASSIGN_OR_RETURN(const Impl::Inherited acls, fs.InheritAcls(c, parent, &img.mode));
  op.tx.Put(fs.I(ino), img);
  LFS_RETURN_IF_ERROR(fs.StageXattrChanges(op, ino, acls.Changes()));
  Node* n = fs.AddNode(ino, img.mode, false);
  op.Commit();
  hold.Keep();
  n->linkable.store((flags & O_EXCL) == 0);
  n->refs.store(1);
  return fs.MakeEntry(ino);
}

namespace {

// What may_delete checks once the directory may be written: nothing leaves
// an append-only directory; the sticky bit; an immutable or append-only
// inode keeps its names.
Status CheckVictim(const Filesystem::Impl& fs, const Cred& c, Ino dir, Ino victim) {
  if (fs.AppendOnly(dir)) return Status::Error(EPERM, "append-only directory");
  LFS_RETURN_IF_ERROR(fs.CheckSticky(c, dir, victim));
  return fs.CheckRewritable(victim);
}

// What removing `name` from `parent` must pass (Linux's may_delete).
Result<Directory::Entry> CheckDelete(const Filesystem::Impl& fs, const Cred& c, Ino parent,
                                     std::string_view name, bool want_dir) {
  LFS_ASSIGN_OR_RETURN(Node * p, fs.GetDir(parent));
  if (name.size() > kMaxName) return Status::Error(ENAMETOOLONG);
  LFS_RETURN_IF_ERROR(fs.Require(c, parent, X_OK));
  if (name == "." || name == "..") return Status::Error(want_dir ? ENOTEMPTY : EISDIR);
  auto e = p->dir->Find(name);
  if (!e) return Status::Error(ENOENT);
  LFS_RETURN_IF_ERROR(fs.MayModifyDir(c, parent));
  LFS_RETURN_IF_ERROR(CheckVictim(fs, c, parent, e->ino));
  const bool is_dir = e->type == DT_DIR;
  if (want_dir && !is_dir) return Status::Error(ENOTDIR);
  if (!want_dir && is_dir) return Status::Error(EISDIR);
  return *e;
}

}  // namespace

Status Filesystem::Unlink(const Cred& c, Ino parent, std::string_view name) {
  Impl& fs = *impl_;
  WriterLock l(&fs.mu_);
  LFS_RETURN_IF_ERROR(RequireWritable(fs));
  LFS_ASSIGN_OR_RETURN(const Directory::Entry e, CheckDelete(fs, c, parent, name, false));
  Op op(fs);
  const int64_t now = NowNs();
  Images img(fs);
  fs.N(parent)->dir->Remove(op.tx, name);
  img[e.ino].nlink -= 1;
  img[e.ino].ctime_ns = now;
  img[parent].mtime_ns = img[parent].ctime_ns = now;
  img.Stage(op);
  op.Commit();
  fs.MaybeFree(e.ino);
  return Status::Ok();
}

Status Filesystem::Rmdir(const Cred& c, Ino parent, std::string_view name) {
  Impl& fs = *impl_;
  WriterLock l(&fs.mu_);
  LFS_RETURN_IF_ERROR(RequireWritable(fs));
  LFS_ASSIGN_OR_RETURN(const Directory::Entry e, CheckDelete(fs, c, parent, name, true));
  if (!fs.N(e.ino)->dir->empty()) return Status::Error(ENOTEMPTY);
  Op op(fs);
  const int64_t now = NowNs();
  Images img(fs);
  fs.N(parent)->dir->Remove(op.tx, name);
  img[e.ino].nlink = 0;
  img[e.ino].ctime_ns = now;
  img[parent].nlink -= 1;
  img[parent].mtime_ns = img[parent].ctime_ns = now;
  img.Stage(op);
  op.Commit();
  fs.MaybeFree(e.ino);
  return Status::Ok();
}

namespace {

// True if `ino` is `ancestor` or lies below it.
bool IsWithin(const Filesystem::Impl& fs, Ino ino, Ino ancestor) {
  for (Ino cur = ino;; cur = fs.I(cur)->parent) {
    if (cur == ancestor) return true;
    if (cur == kRootIno) return false;
  }
}

struct RenameSides {
  Directory::Entry src;
  std::optional<Directory::Entry> dst;
};

// Every check rename makes before it changes anything.
Result<RenameSides> CheckRename(const Filesystem::Impl& fs, const Cred& c, Ino parent,
                                std::string_view name, Ino new_parent, std::string_view new_name,
                                unsigned flags) {
  const bool exchange = flags & RENAME_EXCHANGE;
  LFS_ASSIGN_OR_RETURN(Node * p, fs.GetDir(parent));
  LFS_ASSIGN_OR_RETURN(Node * np, fs.GetDir(new_parent));
  if (name.size() > kMaxName || new_name.size() > kMaxName) return Status::Error(ENAMETOOLONG);
  LFS_RETURN_IF_ERROR(fs.Require(c, parent, X_OK));
  LFS_RETURN_IF_ERROR(fs.Require(c, new_parent, X_OK));
  if (!ValidName(name) || !ValidName(new_name))
    return Status::Error(EBUSY, "cannot rename . or ..");
  RenameSides s;
  auto src = p->dir->Find(name);
  if (!src) return Status::Error(ENOENT);
  s.src = *src;
  s.dst = np->dir->Find(new_name);
  if (exchange && !s.dst) return Status::Error(ENOENT);
  if ((flags & RENAME_NOREPLACE) && s.dst) return Status::Error(EEXIST);
  if (s.dst && s.dst->ino == s.src.ino) return s;  // the same file: nothing to do
  const bool src_dir = s.src.type == DT_DIR;
  const bool dst_dir = s.dst && s.dst->type == DT_DIR;
  if (src_dir && IsWithin(fs, new_parent, s.src.ino))
    return Status::Error(EINVAL, "a directory cannot move into itself");
  if (exchange && dst_dir && IsWithin(fs, parent, s.dst->ino))
    return Status::Error(EINVAL, "a directory cannot move into itself");
  // may_delete on the source side.
  LFS_RETURN_IF_ERROR(fs.MayModifyDir(c, parent));
  LFS_RETURN_IF_ERROR(CheckVictim(fs, c, parent, s.src.ino));
  // may_delete (or may_create) on the target side.
  LFS_RETURN_IF_ERROR(fs.MayModifyDir(c, new_parent));
  if (s.dst) {
    LFS_RETURN_IF_ERROR(CheckVictim(fs, c, new_parent, s.dst->ino));
    if (!exchange) {
      if (src_dir && !dst_dir) return Status::Error(ENOTDIR);
      if (!src_dir && dst_dir) return Status::Error(EISDIR);
    }
  }
  // A directory that changes parent has its ".." rewritten.
  if (parent != new_parent) {
    if (src_dir) LFS_RETURN_IF_ERROR(fs.Require(c, s.src.ino, W_OK));
    if (exchange && dst_dir) LFS_RETURN_IF_ERROR(fs.Require(c, s.dst->ino, W_OK));
  }
  if (!exchange && dst_dir && !fs.N(s.dst->ino)->dir->empty()) return Status::Error(ENOTEMPTY);
  const int64_t links_in =
      (src_dir ? 1 : 0) - ((exchange && dst_dir) || (!exchange && dst_dir) ? 1 : 0);
  if (parent != new_parent && links_in > 0 && fs.I(new_parent)->nlink >= kMaxLinks)
    return Status::Error(EMLINK);
  if (exchange && parent != new_parent && dst_dir && !src_dir && fs.I(parent)->nlink >= kMaxLinks)
    return Status::Error(EMLINK);
  return s;
}

}  // namespace

Status Filesystem::Rename(const Cred& c, Ino parent, std::string_view name, Ino new_parent,
                          std::string_view new_name, unsigned flags) {
  if (flags & ~(RENAME_NOREPLACE | RENAME_EXCHANGE | RENAME_WHITEOUT))
    return Status::Error(EINVAL);
  // As do_renameat2: EXCHANGE goes with neither of the others.
  if ((flags & RENAME_EXCHANGE) && (flags & (RENAME_NOREPLACE | RENAME_WHITEOUT)))
    return Status::Error(EINVAL);
  Impl& fs = *impl_;
  WriterLock l(&fs.mu_);
  LFS_RETURN_IF_ERROR(RequireWritable(fs));
  LFS_ASSIGN_OR_RETURN(const RenameSides s,
                       CheckRename(fs, c, parent, name, new_parent, new_name, flags));
  if (s.dst && s.dst->ino == s.src.ino) return Status::Ok();  // no whiteout either
  const bool exchange = flags & RENAME_EXCHANGE;
  const bool whiteout = flags & RENAME_WHITEOUT;
  const bool src_dir = s.src.type == DT_DIR;
  const bool dst_dir = s.dst && s.dst->type == DT_DIR;

  Op op(fs);
  std::optional<Directory::Spot> spot;
  if (!s.dst) {
    LFS_ASSIGN_OR_RETURN(spot, fs.PlanInsert(op, new_parent, new_name));
  }
  // RENAME_WHITEOUT: the source name is left naming a new whiteout, in the
  // same transaction, so no crash shows the name missing or the file twice.
  Ino wino = 0;
  std::optional<InodeReservation> hold;
  if (whiteout) {
    LFS_ASSIGN_OR_RETURN(wino, fs.AllocInode());
    hold.emplace(fs.free_inodes_, wino);
  }
  const int64_t now = NowNs();
  Images img(fs);
  Directory& from = *fs.N(parent)->dir;
  Directory& to = *fs.N(new_parent)->dir;
  if (exchange) {
    from.Retarget(op.tx, name, s.dst->ino, s.dst->type);
    to.Retarget(op.tx, new_name, s.src.ino, s.src.type);
    if (parent != new_parent && src_dir) {
      img[s.src.ino].parent = new_parent;
      img[parent].nlink -= 1;
      img[new_parent].nlink += 1;
    }
    if (parent != new_parent && dst_dir) {
      img[s.dst->ino].parent = parent;
      img[new_parent].nlink -= 1;
      img[parent].nlink += 1;
    }
    img[s.dst->ino].ctime_ns = now;
  } else {
    if (s.dst) {
      to.Retarget(op.tx, new_name, s.src.ino, s.src.type);
      Inode& victim = img[s.dst->ino];
      victim.nlink = dst_dir ? 0 : victim.nlink - 1;
      victim.ctime_ns = now;
      if (dst_dir) img[new_parent].nlink -= 1;
    } else {
      fs.InsertEntry(op, new_parent, &img[new_parent], *spot, new_name, s.src.ino, s.src.type);
    }
    if (whiteout) {
      op.tx.Put(fs.I(wino), fs.NewInodeImage(c, parent, wino, S_IFCHR, 0, now));
      fs.AddNode(wino, S_IFCHR, false);
      from.Retarget(op.tx, name, wino, DT_CHR);
    } else {
      from.Remove(op.tx, name);
    }
    if (src_dir && parent != new_parent) {
      img[s.src.ino].parent = new_parent;
      img[parent].nlink -= 1;
      img[new_parent].nlink += 1;
    }
  }
  img[s.src.ino].ctime_ns = now;
  img[parent].mtime_ns = img[parent].ctime_ns = now;
  img[new_parent].mtime_ns = img[new_parent].ctime_ns = now;
  img.Stage(op);
  op.Commit();
  if (hold) hold->Keep();
  if (s.dst && !exchange) fs.MaybeFree(s.dst->ino);
  return Status::Ok();
}

Result<std::string> Filesystem::Readlink(Ino ino) {
  ReaderLock l(&impl_->mu_);
  LFS_ASSIGN_OR_RETURN(Node * n, impl_->Get(ino));
  const Inode& in = *impl_->I(ino);
  if (!S_ISLNK(in.mode)) return Status::Error(EINVAL, "not a symlink");
  if (in.flags & kInodeInlineData)
    return std::string(reinterpret_cast<const char*>(in.inline_area), in.size);
  auto m = n->extents.Find(0);
  if (!m) return Status::Corruption("symlink without its target block");
  return std::string(impl_->pool_.BlockPtr(m->pool_block), in.size);
}

Status Filesystem::OpenDir(const Cred& c, Ino ino) {
  ReaderLock l(&impl_->mu_);
  LFS_RETURN_IF_ERROR(impl_->GetDir(ino).status());
  return impl_->Require(c, ino, R_OK);
}

Status Filesystem::ReadDir(Ino ino, uint64_t cookie, bool with_attrs,
                           const std::function<bool(const DirEntry&)>& emit) {
  Impl& fs = *impl_;
  ReaderLock l(&fs.mu_);
  LFS_ASSIGN_OR_RETURN(Node * n, fs.GetDir(ino));
  fs.TouchAtime(fs.I(ino));  // each getdents(2) is an access, as on a local fs
  Entry attrs;
  auto send = [&](std::string_view name, Ino target, unsigned type, uint64_t next) {
    DirEntry d;
    d.name = name;
    d.ino = target;
    d.type = type;
    d.next_cookie = next;
    if (with_attrs) {
      attrs = fs.MakeEntry(target);
      d.entry = &attrs;
    }
    if (!emit(d)) return false;
    // READDIRPLUS hands the kernel an inode: it counts as a lookup. Taken
    // here, under the lock, so the inode cannot be freed in between.
    if (with_attrs && name != "." && name != "..") fs.N(target)->refs.fetch_add(1);
    return true;
  };
  if (cookie == 0 && !send(".", ino, DT_DIR, 1)) return Status::Ok();
  if (cookie <= 1 && !send("..", fs.I(ino)->parent, DT_DIR, 2)) return Status::Ok();
  DirPos pos = DirPos::FromCookie(std::max<uint64_t>(cookie, 3));
  while (auto e = n->dir->Next(pos)) {
    if (!send(e->name, e->ino, e->type, e->pos.cookie() + 1)) break;
    pos = DirPos::FromCookie(e->pos.cookie() + 1);
  }
  return Status::Ok();
}

}  // namespace leasefs::engine
