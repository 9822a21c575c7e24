#include "fusefs/daemon/server.h"

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>

#include <algorithm>
#include <cerrno>
#include <string>
#include <string_view>
#include <vector>

#include "base/clock.h"
#include "engine/acl.h"
#include "fusefs/daemon/reply.h"

namespace leasefs::daemon {

namespace {

using engine::Ino;
using engine::SetAttrArgs;

// Largest READ/WRITE payload: 1 MiB I/O is one request (libfuse's receive
// buffer holds 1 MiB + a header page; the kernel's max_pages follows).
constexpr unsigned kMaxIo = 1u << 20;

// Smallest READDIRPLUS record: fuse_entry_out (128 bytes) + fuse_dirent
// (24 bytes + name, padded to 8).
constexpr size_t kMinDirentPlusBytes = 160;

// Times from the caller outside the pool's range are clamped into it, as
// the kernel does for a local filesystem (base/clock.h): the kernel leaves
// that to a FUSE daemon (its s_time_max is the largest time64_t).
int64_t ToNs(const timespec& ts) { return ClampedTimespecToNs(ts); }

// utimensat's UTIME_NOW arrives as FATTR_*_NOW (with the kernel's time in
// the value, which we ignore): the engine then asks only for write
// permission, as utimensat(2) does.
SetAttrArgs ToSetAttrArgs(const struct stat& attr, int to_set, bool via_open_file) {
  SetAttrArgs a;
  auto set = [&a, to_set](int fuse_bit, unsigned bit) {
    if (to_set & fuse_bit) a.valid |= bit;
    return (to_set & fuse_bit) != 0;
  };
  if (set(FUSE_SET_ATTR_MODE, SetAttrArgs::kMode)) a.mode = attr.st_mode & 07777;
  if (set(FUSE_SET_ATTR_UID, SetAttrArgs::kUid)) a.uid = attr.st_uid;
  if (set(FUSE_SET_ATTR_GID, SetAttrArgs::kGid)) a.gid = attr.st_gid;
  if (set(FUSE_SET_ATTR_SIZE, SetAttrArgs::kSize)) a.size = static_cast<uint64_t>(attr.st_size);
  if (!set(FUSE_SET_ATTR_ATIME_NOW, SetAttrArgs::kAtimeNow) &&
      set(FUSE_SET_ATTR_ATIME, SetAttrArgs::kAtime))
    a.atime_ns = ToNs(attr.st_atim);
  if (!set(FUSE_SET_ATTR_MTIME_NOW, SetAttrArgs::kMtimeNow) &&
      set(FUSE_SET_ATTR_MTIME, SetAttrArgs::kMtime))
    a.mtime_ns = ToNs(attr.st_mtim);
  if (set(FUSE_SET_ATTR_CTIME, SetAttrArgs::kCtime)) a.ctime_ns = ToNs(attr.st_ctim);
  a.via_open_file = via_open_file;
  return a;
}

bool IsDotOrDotDot(std::string_view name) { return name == "." || name == ".."; }

std::vector<gid_t> SupplementaryGroups(fuse_req_t req) {
  std::vector<gid_t> groups(32);
  for (;;) {
    const int n = fuse_req_getgroups(req, static_cast<int>(groups.size()), groups.data());
    if (n < 0) return {};  // process gone, or /proc unreadable: primary group only
    if (static_cast<size_t>(n) <= groups.size()) {
      groups.resize(static_cast<size_t>(n));
      return groups;
    }
    groups.resize(static_cast<size_t>(n));
  }
}

int ReplyOk(fuse_req_t req) {
  fuse_reply_err(req, 0);
  return 0;
}

int ReplyStatus(fuse_req_t req, const Status& s) { return s.ok() ? ReplyOk(req) : ErrnoOf(s); }

// Replies an xattr value or name list the way getxattr(2) sizes it.
int ReplyXattr(fuse_req_t req, const std::string& value, size_t size) {
  if (size == 0) {
    fuse_reply_xattr(req, value.size());
  } else if (value.size() > size) {
    return ERANGE;
  } else {
    fuse_reply_buf(req, value.data(), value.size());
  }
  return 0;
}

// Points `iov` at the memory buffers of `bufv` from its current position.
// Returns false if a buffer is a file descriptor (spliced data) or there are
// more than `max` buffers.
bool MemorySegments(const fuse_bufvec& bufv, iovec* iov, int max, int* count) {
  int n = 0;
  for (size_t i = bufv.idx; i < bufv.count; ++i) {
    const fuse_buf& b = bufv.buf[i];
    const size_t skip = i == bufv.idx ? bufv.off : 0;
    if ((b.flags & FUSE_BUF_IS_FD) || n == max) return false;
    if (b.size <= skip) continue;
    iov[n++] = {static_cast<char*>(b.mem) + skip, b.size - skip};
  }
  *count = n;
  return true;
}

// Copies what is left of `bufv` into `*out`. Returns 0 or an errno.
int CopyToMemory(fuse_bufvec* bufv, std::vector<char>* out) {
  size_t total = 0;
  for (size_t i = bufv->idx; i < bufv->count; ++i) total += bufv->buf[i].size;
  total -= bufv->off;
  out->resize(total);
  fuse_bufvec dst{};
  dst.count = 1;
  dst.buf[0].size = total;
  dst.buf[0].mem = out->data();
  dst.buf[0].fd = -1;
  const ssize_t n = fuse_buf_copy(&dst, bufv, static_cast<fuse_buf_copy_flags>(0));
  if (n < 0) return static_cast<int>(-n);
  out->resize(static_cast<size_t>(n));
  return 0;
}

// Fills one READDIR or READDIRPLUS reply buffer from the engine's entries.
class DirFiller {
 public:
  DirFiller(fuse_req_t req, bool plus, size_t size, const Timeouts& t)
      : req_(req), plus_(plus), size_(size), timeouts_(t) {
    buf_.resize(size);
    name_.reserve(256);
    if (plus) counted_.reserve(size / kMinDirentPlusBytes + 1);
  }

  // The engine's emit callback: false once the buffer is full. Never throws
  // into the engine; a failure stops the listing and is kept in err().
  bool Add(const engine::DirEntry& de) noexcept {
    try {
      return AddEntry(de);
    } catch (const std::bad_alloc&) {
      err_ = ENOMEM;
    } catch (...) {
      err_ = EIO;
    }
    return false;
  }

  [[nodiscard]] int err() const { return err_; }
  [[nodiscard]] const char* data() const { return buf_.data(); }
  [[nodiscard]] size_t used() const { return used_; }
  // The inodes handed to the kernel with a reference (READDIRPLUS).
  [[nodiscard]] const std::vector<Ino>& counted() const { return counted_; }

 private:
  bool AddEntry(const engine::DirEntry& de) {
    name_.assign(de.name);  // fuse_add_direntry* need a NUL-terminated name
    fuse_entry_param p{};
    p.attr.st_ino = de.ino;
    p.attr.st_mode = DTTOIF(de.type);
    // "." and ".." never get a reference (the kernel skips them); neither
    // does an entry without attributes: node id 0 tells the kernel so.
    const bool counts = plus_ && de.entry != nullptr && !IsDotOrDotDot(de.name);
    if (counts) {
      p.ino = de.ino;
      p.generation = de.entry->generation;
      p.attr = de.entry->attr;
      p.attr_timeout = timeouts_.attr;
      p.entry_timeout = timeouts_.entry;
    }
    char* at = buf_.data() + used_;
    const size_t room = size_ - used_;
    const off_t next = static_cast<off_t>(de.next_cookie);
    const size_t n = plus_ ? fuse_add_direntry_plus(req_, at, room, name_.c_str(), &p, next)
                           : fuse_add_direntry(req_, at, room, name_.c_str(), &p.attr, next);
    if (n > room) return false;  // did not fit: the next call resumes here
    used_ += n;
    if (counts) counted_.push_back(de.ino);
    return true;
  }

  fuse_req_t req_;
  bool plus_;
  size_t size_;
  const Timeouts& timeouts_;
  std::vector<char> buf_;
  std::string name_;
  std::vector<Ino> counted_;
  size_t used_ = 0;
  int err_ = 0;
};

}  // namespace

// The umask comes with MKNOD, MKDIR and CREATE (FUSE_CAP_DONT_MASK: the
// engine applies it unless a default ACL replaces it); it is 0 in others.
engine::Cred CredOf(fuse_req_t req) {
  const fuse_ctx* c = fuse_req_ctx(req);
  engine::Cred cred(c->uid, c->gid, c->pid, [req] { return SupplementaryGroups(req); });
  cred.set_umask(c->umask);
  return cred;
}

engine::Cred CredWithGroups(fuse_req_t req) {
  const fuse_ctx* c = fuse_req_ctx(req);
  engine::Cred cred(c->uid, c->gid, c->pid, [groups = SupplementaryGroups(req)] { return groups; });
  cred.set_umask(c->umask);
  return cred;
}

void Server::DoInit(fuse_conn_info* conn) noexcept {
  auto want = [conn](unsigned cap) {
    if (conn->capable & cap) conn->want |= cap;
  };
  want(FUSE_CAP_ATOMIC_O_TRUNC);    // O_TRUNC inside OPEN, not a SETATTR after it
  want(FUSE_CAP_READDIRPLUS);       // ls -l: attributes come with the names
  want(FUSE_CAP_READDIRPLUS_AUTO);  // ...but plain READDIR when nobody stats
  // The engine clears suid/sgid itself. libfuse 3.14 never copies this bit
  // into its INIT reply, so the kernel still does it on chown and truncate
  // (see DoSetAttr). Direct-I/O writes send no GETXATTR of
  // security.capability either way (checked with -d).
  want(FUSE_CAP_HANDLE_KILLPRIV);
  want(FUSE_CAP_CACHE_SYMLINKS);  // a symlink's target never changes
  // File handles that outlive the kernel's cache, a daemon and a mount: the
  // kernel asks LOOKUP(ino, ".") and (ino, "..") for them (DoLookup).
  want(FUSE_CAP_EXPORT_SUPPORT);
  // POSIX ACLs (docs/acl.md). The engine applies the umask itself, as only
  // it knows whether the parent has a default ACL, which replaces the umask.
  want(FUSE_CAP_DONT_MASK);
  // With default_permissions the kernel checks ACLs itself only when told
  // the filesystem has them, and then caches them (it asks GETXATTR, and
  // forgets them on SETATTR, on its own SETXATTR of one and on every
  // attribute refresh). Without default_permissions the engine checks them,
  // and the capability must stay off: the kernel would turn
  // default_permissions on with it (fs/fuse/inode.c, process_init_reply).
  if (kernel_checks_permissions_) want(FUSE_CAP_POSIX_ACL);
  // No kernel caching of file data (DAX clients must see the bytes FUSE
  // writes), and no splice: a spliced write would need an extra copy.
  conn->want &= ~(FUSE_CAP_WRITEBACK_CACHE | FUSE_CAP_SPLICE_READ | FUSE_CAP_SPLICE_WRITE |
                  FUSE_CAP_SPLICE_MOVE);
  conn->max_write = kMaxIo;
  conn->time_gran = 1;
}

fuse_entry_param Server::EntryParam(const engine::Entry& e) const noexcept {
  fuse_entry_param p{};
  p.ino = e.attr.st_ino;
  // The kernel gives the root generation 0 and wants it so (a handle of the
  // root encodes 0; fuse_lookup_name warns on another).
  p.generation = p.ino == FUSE_ROOT_ID ? 0 : e.generation;
  p.attr = e.attr;
  p.attr_timeout = timeouts_.attr;
  p.entry_timeout = timeouts_.entry;
  return p;
}

int Server::ReplyEntry(fuse_req_t req, const engine::Entry& e) {
  const fuse_entry_param p = EntryParam(e);
  // A reply the kernel never received carried no reference.
  if (fuse_reply_entry(req, &p) != 0) fs_->Forget(p.ino, 1);
  return 0;
}

void Server::SetFileOpenFlags(fuse_ino_t ino, fuse_file_info* fi) {
  // Every read and write goes to the daemon, never to the page cache: DAX
  // clients (lease holders) store straight into the pool, and FUSE readers
  // must see exactly their bytes.
  fi->direct_io = 1;
  fi->keep_cache = 0;
  // close(2) need not send a FLUSH round trip: writes are durable on reply
  // and there is nothing to flush. Under close_with_pins=block-close a
  // close may have to wait for pins, and FLUSH is what it waits for.
  fi->noflush = close_with_pins_ != PinMountOptions::Close::kBlockClose;
  fi->fh = OpenFiles::Handle(files_.Open(ino, fi->flags));
}

int Server::DoLookup(fuse_req_t req, fuse_ino_t parent, const char* name) {
  // A path walk never sends "." or "..": these come from the kernel decoding
  // a file handle (FUSE_CAP_EXPORT_SUPPORT, docs/handles.md), for inodes by
  // number. ENOENT makes it ESTALE.
  const std::string_view n(name);
  if (n == "." || n == "..") {
    auto e = n == "." ? fs_->LookupInode(parent) : fs_->LookupParent(parent);
    return e.ok() ? ReplyEntry(req, *e) : ErrnoOf(e.status());
  }
  auto e = fs_->Lookup(CredOf(req), parent, name);
  if (e.ok()) return ReplyEntry(req, *e);
  if (e.status().err() != ENOENT || timeouts_.negative <= 0) return ErrnoOf(e.status());
  // Node id 0: the kernel caches "no such name" for negative_timeout. Only
  // this daemon changes the namespace, and it tells the kernel of its own
  // changes through the replies, so the cache cannot go stale.
  fuse_entry_param p{};
  p.entry_timeout = timeouts_.negative;
  fuse_reply_entry(req, &p);
  return 0;
}

void Server::DoForget(fuse_ino_t ino, uint64_t nlookup) { fs_->Forget(ino, nlookup); }

int Server::DoGetAttr(fuse_req_t req, fuse_ino_t ino) {
  auto e = fs_->GetAttr(ino);
  if (!e.ok()) return ErrnoOf(e.status());
  fuse_reply_attr(req, &e->attr, timeouts_.attr);
  return 0;
}

Server::KillPrivMode Server::KernelKillPriv(fuse_ino_t ino, const struct stat& attr,
                                            int to_set, const engine::Cred& cred) {
  if (!(to_set & FUSE_SET_ATTR_MODE)) return KillPrivMode::kNone;
  auto e = fs_->GetAttr(ino);
  if (!e.ok()) return KillPrivMode::kNone;
  constexpr mode_t kSetId = S_ISUID | S_ISGID;
  const mode_t now = e->attr.st_mode & 07777, asked = attr.st_mode & 07777;
  if ((asked & ~now) != 0 || (asked | kSetId) != (now | kSetId)) return KillPrivMode::kNone;
  constexpr int kSizeOrOwner = FUSE_SET_ATTR_SIZE | FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID;
  if (to_set & kSizeOrOwner) return KillPrivMode::kWithSizeOrOwner;
  const bool owner = cred.is_root() || cred.uid() == e->attr.st_uid;
  return to_set == FUSE_SET_ATTR_MODE && !owner ? KillPrivMode::kAlone : KillPrivMode::kNone;
}

int Server::DoSetAttr(fuse_req_t req, fuse_ino_t ino, const struct stat& attr, int to_set,
                      const fuse_file_info* fi) {
  const engine::Cred cred = CredOf(req);
  // libfuse 3.14 never grants FUSE_CAP_HANDLE_KILLPRIV, so the kernel kills
  // setuid/setgid itself (fs/fuse/dir.c, fuse_setattr), as the caller, by a
  // MODE that clears them:
  switch (KernelKillPriv(ino, attr, to_set, cred)) {
    case KillPrivMode::kWithSizeOrOwner:
      // On truncate and chown, added to the change. No system call changes
      // the mode together with size or owner, so such a MODE is always that
      // one. The engine clears those bits itself on these changes, by the
      // same rules, and would refuse the MODE from a writer who does not own
      // the file: drop it.
      to_set &= ~FUSE_SET_ATTR_MODE;
      break;
    case KillPrivMode::kAlone:
      // Before a fallocate or copy_file_range (file_modified), alone, from a
      // writer who need not own the file: the engine's rule serves it. (With
      // no_default_permissions, a non-owner's chmod that only clears these
      // bits looks the same, and is served the same way if the caller may
      // write the file; a write would clear them anyway.)
      return DoKernelRemovePrivs(req, ino, cred, EPERM, /*reply_attr=*/true);
    case KillPrivMode::kNone:
      break;
  }
  // The kernel passes the open file (FATTR_FH) for ftruncate(2), whose fd
  // was already checked for writing.
  const SetAttrArgs a = ToSetAttrArgs(attr, to_set, fi != nullptr);
  const OpenFile* f = FileOf(fi);
  engine::Cred by = cred;
  if (f != nullptr) by.set_open_file(f->id());
  // truncate(2) by path has no open file and always waits for a break.
  return WithBreaks(req, by, f != nullptr && f->nonblock(),
                    [this, ino, a](fuse_req_t r, const engine::Cred& c) {
                      auto e = fs_->SetAttr(c, ino, a);
                      if (!e.ok()) return ErrnoOf(e.status());
                      fuse_reply_attr(r, &e->attr, timeouts_.attr);
                      return 0;
                    });
}

int Server::DoKernelRemovePrivs(fuse_req_t req, fuse_ino_t ino, const engine::Cred& cred,
                                int denied_errno, bool reply_attr) {
  if (Status s = fs_->RemovePrivs(cred, ino); !s.ok())
    return s.err() == EACCES ? denied_errno : ErrnoOf(s);
  if (!reply_attr) {
    // The kernel may hold the old mode for attr_timeout: a REMOVEXATTR's
    // reply does not update it.
    fuse_lowlevel_notify_inval_inode(se_, ino, -1, 0);
    return ReplyOk(req);
  }
  auto e = fs_->GetAttr(ino);
  if (!e.ok()) return ErrnoOf(e.status());
  fuse_reply_attr(req, &e->attr, timeouts_.attr);
  return 0;
}

int Server::DoReadlink(fuse_req_t req, fuse_ino_t ino) {
  auto target = fs_->Readlink(ino);
  if (!target.ok()) return ErrnoOf(target.status());
  fuse_reply_readlink(req, target->c_str());
  return 0;
}

int Server::DoMknod(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode, dev_t rdev) {
  auto e = fs_->Mknod(CredOf(req), parent, name, mode, rdev);
  return e.ok() ? ReplyEntry(req, *e) : ErrnoOf(e.status());
}

int Server::DoMkdir(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode) {
  auto e = fs_->Mkdir(CredOf(req), parent, name, mode);
  return e.ok() ? ReplyEntry(req, *e) : ErrnoOf(e.status());
}

int Server::DoUnlink(fuse_req_t req, fuse_ino_t parent, const char* name) {
  return ReplyStatus(req, fs_->Unlink(CredOf(req), parent, name));
}

int Server::DoRmdir(fuse_req_t req, fuse_ino_t parent, const char* name) {
  return ReplyStatus(req, fs_->Rmdir(CredOf(req), parent, name));
}

int Server::DoSymlink(fuse_req_t req, const char* target, fuse_ino_t parent, const char* name) {
  auto e = fs_->Symlink(CredOf(req), parent, name, target);
  return e.ok() ? ReplyEntry(req, *e) : ErrnoOf(e.status());
}

int Server::DoRename(fuse_req_t req, fuse_ino_t parent, const char* name, fuse_ino_t new_parent,
                     const char* new_name, unsigned flags) {
  return ReplyStatus(req, fs_->Rename(CredOf(req), parent, name, new_parent, new_name, flags));
}

int Server::DoLink(fuse_req_t req, fuse_ino_t ino, fuse_ino_t new_parent, const char* new_name) {
  auto e = fs_->Link(CredOf(req), ino, new_parent, new_name);
  return e.ok() ? ReplyEntry(req, *e) : ErrnoOf(e.status());
}

int Server::DoOpen(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  const engine::Cred cred = CredOf(req);
  // O_TRUNC drops privileges, as a write does (see DoWriteBuf). The kernel
  // then looks for security.capability itself and, finding none, sends
  // nothing more. An exec's open carries engine::kOpenExec and is checked
  // for execute permission only; READs on its handle serve the kernel's
  // loading of the program, and no caller holds that handle as a descriptor.
  const bool may_kill_priv = (fi->flags & O_TRUNC) && fs_->WouldRemovePrivs(cred, ino);
  // Without default_permissions the kernel never asks whether the program
  // may be read, and lets whoever runs it read its memory (/proc/<pid>/mem):
  // there, an exec must be allowed to read the file too, as before Linux
  // learnt execute-only programs.
  if ((fi->flags & engine::kOpenExec) && !kernel_checks_permissions_) {
    if (Status s = fs_->Access(cred, ino, R_OK); !s.ok()) return ErrnoOf(s);
  }
  // An O_TRUNC open breaks layout leases as a truncate does.
  return WithBreaks(req, cred, (fi->flags & O_NONBLOCK) != 0,
                    [this, ino, may_kill_priv, opened = *fi](fuse_req_t r,
                                                             const engine::Cred& c) mutable {
                      auto e = fs_->Open(c, ino, opened.flags);
                      if (!e.ok()) return ErrnoOf(e.status());
                      if (may_kill_priv) fuse_lowlevel_notify_inval_inode(se_, ino, -1, 0);
                      SetFileOpenFlags(ino, &opened);
                      // A reply the kernel did not take (the caller was
                      // interrupted) opens nothing: no RELEASE will follow.
                      if (fuse_reply_open(r, &opened) != 0) files_.Release(FileOf(&opened));
                      return 0;
                    });
}

int Server::DoTmpfile(fuse_req_t req, fuse_ino_t parent, mode_t mode, fuse_file_info* fi) {
  // A new file: no lease can be in the way, nothing to break.
  auto e = fs_->Tmpfile(CredOf(req), parent, mode, fi->flags);
  if (!e.ok()) return ErrnoOf(e.status());
  SetFileOpenFlags(e->attr.st_ino, fi);
  const fuse_entry_param p = EntryParam(*e);
  if (fuse_reply_create(req, &p, fi) != 0) {
    fs_->Forget(p.ino, 1);  // the kernel never got it: the orphan goes now
    files_.Release(FileOf(fi));
  }
  return 0;
}

int Server::StatxOf(void* userdata, uint64_t nodeid, StatxAttr* out) noexcept {
  const Server& s = *static_cast<const Server*>(userdata);
  engine::Entry entry;
  try {
    auto e = s.fs_->GetAttr(nodeid);
    if (!e.ok()) return ErrnoOf(e.status());
    entry = *e;
  } catch (const std::bad_alloc&) {
    return ENOMEM;
  } catch (...) {
    return EIO;
  }
  const engine::Entry* e = &entry;
  out->st = e->attr;
  out->btime.tv_sec = e->btime_ns / 1'000'000'000;
  out->btime.tv_nsec = e->btime_ns % 1'000'000'000;
  if (out->btime.tv_nsec < 0) {  // before 1970
    out->btime.tv_nsec += 1'000'000'000;
    out->btime.tv_sec -= 1;
  }
  out->attr_timeout = s.timeouts_.attr;
  return 0;
}

int Server::DoCreate(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode,
                     fuse_file_info* fi) {
  if (std::string_view(name) == kTmpfileName) return DoTmpfile(req, parent, mode, fi);
  // O_CREAT|O_TRUNC of an existing file truncates it: leases break.
  return WithBreaks(
      req, CredOf(req), (fi->flags & O_NONBLOCK) != 0,
      [this, parent, name = std::string(name), mode, created = *fi](
          fuse_req_t r, const engine::Cred& c) mutable {
        auto e = fs_->Create(c, parent, name, mode, created.flags);
        if (!e.ok()) return ErrnoOf(e.status());
        SetFileOpenFlags(e->attr.st_ino, &created);
        const fuse_entry_param p = EntryParam(*e);
        if (fuse_reply_create(r, &p, &created) != 0) {
          fs_->Forget(p.ino, 1);
          files_.Release(FileOf(&created));
        }
        return 0;
      });
}

int Server::DoRead(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off) {
  // The sink replies straight from the pool mapping: the only copy is the
  // kernel's, into the reader's buffer.
  bool replied = false;
  const Status s = fs_->Read(ino, static_cast<uint64_t>(off), size,
                             [&replied, req](const iovec* iov, int count) {
                               if (replied) return;
                               replied = true;
                               fuse_reply_iov(req, iov, count);
                             });
  if (replied) return 0;
  if (!s.ok()) return ErrnoOf(s);
  fuse_reply_buf(req, nullptr, 0);  // nothing to read
  return 0;
}

int Server::DoWriteBuf(fuse_req_t req, fuse_ino_t ino, fuse_bufvec* bufv, off_t off,
                       const fuse_file_info* fi) {
  constexpr int kMaxSegments = 8;
  iovec iov[kMaxSegments];
  int count = 0;
  std::vector<char> copy;
  if (!MemorySegments(*bufv, iov, kMaxSegments, &count)) {
    // Spliced data (a pipe) must be read into memory before the engine can
    // copy it into the pool.
    if (int err = CopyToMemory(bufv, &copy); err != 0) return err;
    iov[0] = {copy.data(), copy.size()};
    count = 1;
  }
  // The write, from segments that must live as long as the call.
  // WRITE carries the file's flags: O_APPEND is what lets it write an
  // append-only file (a mapping's writeback never appends).
  const bool append = fi != nullptr && (fi->flags & O_APPEND) && !fi->writepage;
  auto write_from = [this, ino, off, append](const iovec* v, int n) {
    return [this, ino, off, append, v, n](fuse_req_t r, const engine::Cred& c) {
      // The kernel sends a direct-I/O WRITE without dropping privileges
      // first: the engine does.
      const bool may_kill_priv = fs_->WouldRemovePrivs(c, ino);
      auto w = fs_->Write(c, ino, static_cast<uint64_t>(off), v, n, append);
      if (!w.ok()) return ErrnoOf(w.status());
      // The engine dropped setuid/setgid or the capability, which the
      // kernel cannot learn from a WRITE reply; `stat -c %A` would show the
      // cached mode until attr_timeout. Invalidating attributes never
      // blocks without writeback caching.
      if (may_kill_priv) fuse_lowlevel_notify_inval_inode(se_, ino, -1, 0);
      fuse_reply_write(r, *w);
      return 0;
    };
  };
  // A write that must wait for a break gets a copy of its data: libfuse
  // reuses the buffer once this handler returns. WRITE carries the file's
  // current flags, O_NONBLOCK included.
  auto owned = [&]() -> LayoutCall {
    auto data = std::make_shared<std::vector<char>>();
    for (int i = 0; i < count; ++i) {
      const char* b = static_cast<const char*>(iov[i].iov_base);
      data->insert(data->end(), b, b + iov[i].iov_len);
    }
    return [data, write_from](fuse_req_t r, const engine::Cred& c) {
      iovec v{data->data(), data->size()};
      return write_from(&v, 1)(r, c);
    };
  };
  return WithBreaks(req, CredThrough(req, FileOf(fi)), fi && (fi->flags & O_NONBLOCK),
                    write_from(iov, count), owned);
}

int Server::DoFsync(fuse_req_t req, fuse_ino_t ino, int datasync) {
  // A file some process stores into through DAX: fsync is also where plain
  // mappings of it catch up with those stores (docs/mmap.md, "DAX"); the
  // kernel wrote their dirty pages back before it sent this.
  if (SharedMappings() && dax_ != nullptr && dax_->WritableMapped(ino)) {
    DeferFlushing(req, [this, ino, datasync](fuse_req_t r) {
      const Status s = fs_->Fsync(ino, datasync != 0);
      if (s.ok()) DropCachedPages({{ino, 0, 0}});
      return ReplyStatus(r, s);
    });
    return 0;
  }
  return ReplyStatus(req, fs_->Fsync(ino, datasync != 0));
}

bool Server::DoRelease(fuse_req_t req, const fuse_file_info* fi) {
  OpenFile* f = FileOf(fi);
  if (f == nullptr) return false;
  const uint64_t id = f->id();
  leases_.table().CloseOpenFile(id);
  if (dax_ != nullptr) dax_->FileClosed(id);
  files_.Release(f);
  if (close_with_pins_ != PinMountOptions::Close::kKillOnClose || !pins_ ||
      pins_->PinsOf(id) == 0) {
    return false;
  }
  // Nobody waits for RELEASE's answer; the workers' queue takes the task
  // even when they are all busy (no per-user cap: a lost kill would leave
  // the pins behind).
  waiters_.Submit(req, [this, id](fuse_req_t r) {
    KillPinHolders(id);
    fuse_reply_err(r, 0);
    return 0;
  });
  return true;
}

int Server::DoPoll(fuse_req_t req, fuse_ino_t, const fuse_file_info* fi, fuse_pollhandle* ph) {
  OpenFile* f = FileOf(fi);
  // The handle is kept before the state is read: a break that comes in
  // between then finds it and wakes the poller.
  if (ph != nullptr) {
    if (f != nullptr) {
      f->SetPollHandle(ph);
    } else {
      fuse_pollhandle_destroy(ph);
    }
  }
  unsigned revents = POLLIN | POLLOUT | POLLRDNORM | POLLWRNORM;
  if (f != nullptr && leases_.table().Pollpri(f->id())) revents |= POLLPRI;
  fuse_reply_poll(req, revents);
  return 0;
}

int Server::DoOpenDir(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  if (Status s = fs_->OpenDir(CredOf(req), ino); !s.ok()) return ErrnoOf(s);
  fi->fh = 0;  // the engine lists by cookie: no per-handle state
  fuse_reply_open(req, fi);
  return 0;
}

int Server::DoReadDir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, bool plus) {
  DirFiller fill(req, plus, size, timeouts_);
  const Status s = fs_->ReadDir(ino, static_cast<uint64_t>(off), plus,
                                [&fill](const engine::DirEntry& de) { return fill.Add(de); });
  if (!s.ok()) return ErrnoOf(s);
  if (fill.err() != 0) return fill.err();
  // The engine took a reference for every entry the filler accepted, before
  // the reply: once the kernel has them it may FORGET them at once.
  if (fuse_reply_buf(req, fill.data(), fill.used()) != 0) {
    for (Ino ino_added : fill.counted()) fs_->Forget(ino_added, 1);
  }
  return 0;
}

int Server::DoStatFs(fuse_req_t req) {
  const struct statvfs st = fs_->StatFs();
  fuse_reply_statfs(req, &st);
  return 0;
}

int Server::DoSetXattr(fuse_req_t req, fuse_ino_t ino, const char* name, const char* value,
                       size_t size, int flags) {
  const Status s = fs_->SetXattr(CredOf(req), ino, name, std::string_view(value, size), flags);
  if (s.ok() && engine::acl::IsAclXattr(name)) ForgetAclAttrs(ino);
  return ReplyStatus(req, s);
}

void Server::ForgetAclAttrs(fuse_ino_t ino) {
  // Setting an access ACL changes the mode. With FUSE_CAP_POSIX_ACL
  // (default_permissions) the kernel forgets the inode's attributes and
  // ACLs itself after it sent the change; a notification on top would also
  // make it drop the reply of a GETATTR in flight (it bumps the attribute
  // version), and a permission check would then use a mode older than
  // both. Without it the kernel would show the old mode until attr_timeout.
  // Never blocks (no writeback cache).
  if (!kernel_checks_permissions_) fuse_lowlevel_notify_inval_inode(se_, ino, -1, 0);
}

int Server::DoGetXattr(fuse_req_t req, fuse_ino_t ino, const char* name, size_t size) {
  auto value = fs_->GetXattr(CredOf(req), ino, name);
  return value.ok() ? ReplyXattr(req, *value, size) : ErrnoOf(value.status());
}

int Server::DoListXattr(fuse_req_t req, fuse_ino_t ino, size_t size) {
  // The kernel never takes more than XATTR_LIST_MAX of names, and answers a
  // size probe with at most that: past it (or past the caller's buffer) the
  // names are not gathered, and a probe learns "more than the limit".
  constexpr size_t kListMax = 65536;  // XATTR_LIST_MAX, <linux/limits.h>
  auto names = fs_->ListXattr(CredOf(req), ino, size == 0 ? kListMax : std::min(size, kListMax));
  if (names.ok()) return ReplyXattr(req, *names, size);
  if (size == 0 && names.status().err() == ERANGE) {
    fuse_reply_xattr(req, kListMax + 1);
    return 0;
  }
  return ErrnoOf(names.status());
}

int Server::DoRemoveXattr(fuse_req_t req, fuse_ino_t ino, const char* name) {
  const engine::Cred cred = CredOf(req);
  // Before a truncate, O_TRUNC, fallocate or copy_file_range the kernel
  // removes security.capability itself (security_inode_killpriv), sending
  // this as the caller, who needs no privilege for it. removexattr(2) of
  // that name by a caller without CAP_SETFCAP is refused by the kernel
  // (cap_inode_removexattr) and never arrives, so from a non-root caller it
  // is that request: the engine's rule serves it (dropping setuid/setgid
  // too, which the kernel asks for next anyway). EACCES if the caller may
  // not write the file.
  if (!cred.is_root() && std::string_view(name) == "security.capability")
    return DoKernelRemovePrivs(req, ino, cred, EACCES, /*reply_attr=*/false);
  const Status s = fs_->RemoveXattr(cred, ino, name);
  if (s.ok() && engine::acl::IsAclXattr(name)) ForgetAclAttrs(ino);
  return ReplyStatus(req, s);
}

int Server::DoAccess(fuse_req_t req, fuse_ino_t ino, int mask) {
  return ReplyStatus(req, fs_->Access(CredOf(req), ino, mask));
}

int Server::DoFallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t off, off_t len,
                        const fuse_file_info* fi) {
  const OpenFile* f = FileOf(fi);
  return WithBreaks(req, CredThrough(req, f), f != nullptr && f->nonblock(),
                    [this, ino, mode, off, len](fuse_req_t r, const engine::Cred& c) {
                      // The kernel normally dropped the privileges already (see
                      // DoSetAttr and DoRemoveXattr); the engine drops whatever
                      // is left.
                      const bool may_kill_priv = fs_->WouldRemovePrivs(c, ino);
                      const Status s = fs_->Fallocate(c, ino, mode, static_cast<uint64_t>(off),
                                                      static_cast<uint64_t>(len));
                      if (s.ok() && may_kill_priv)
                        fuse_lowlevel_notify_inval_inode(se_, ino, -1, 0);
                      return ReplyStatus(r, s);
                    });
}

// One user's place among the deferred requests, held by the task: given
// back when the task is done or dropped (a pool shutting down drops it).
class Server::DeferredSlot {
 public:
  DeferredSlot(Server* s, uid_t uid) : s_(s), uid_(uid) {}
  ~DeferredSlot() {
    MutexLock l(&s_->deferred_mu_);
    if (--s_->deferred_by_uid_[uid_] == 0) s_->deferred_by_uid_.erase(uid_);
  }
  DeferredSlot(const DeferredSlot&) = delete;
  DeferredSlot& operator=(const DeferredSlot&) = delete;

 private:
  Server* const s_;
  const uid_t uid_;
};

void Server::Defer(fuse_req_t req, WaitPool::Task task) noexcept {
  const uid_t uid = fuse_req_ctx(req)->uid;
  std::shared_ptr<DeferredSlot> slot;
  try {
    {
      MutexLock l(&deferred_mu_);
      int& n = deferred_by_uid_[uid];
      if (uid != 0 && n >= kMaxDeferredPerUser) {
        fuse_reply_err(req, EAGAIN);
        return;
      }
      ++n;
    }
    slot = std::make_shared<DeferredSlot>(this, uid);
    waiters_.Submit(req, [slot, task = std::move(task)](fuse_req_t r) { return task(r); });
  } catch (...) {
    if (!slot) {  // the count went up but no slot holds it
      MutexLock l(&deferred_mu_);
      if (--deferred_by_uid_[uid] == 0) deferred_by_uid_.erase(uid);
    }
    fuse_reply_err(req, ENOMEM);
  }
}

int Server::BreakThenRetry(fuse_req_t req, const engine::Cred& cred, bool nonblock,
                           LayoutCall call) {
  std::optional<engine::LayoutChange> change = LeaseEdge::TakeRefused();
  if (!change) return EIO;  // ERESTART comes from the guard alone
  if (nonblock) {
    // Start the break (holders are told) but do not wait for it.
    Status s = leases_.table().Break(cred, *change, /*nonblock=*/true, nullptr);
    if (!s.ok()) return ErrnoOf(s);
    const int rc = call(req, cred);  // the leases went meanwhile
    if (rc != ERESTART) return rc;
    LeaseEdge::TakeRefused();
    return EWOULDBLOCK;
  }
  // The worker cannot ask the caller's groups once the caller is gone.
  engine::Cred later = CredWithGroups(req);
  later.set_open_file(cred.open_file());
  Defer(req, [this, later = std::move(later), change = *change,
              again = std::move(call)](fuse_req_t r) {
    return BreakAndRetry(r, later, again, change);
  });
  return 0;
}

int Server::BreakAndRetry(fuse_req_t req, const engine::Cred& cred, const LayoutCall& call,
                          engine::LayoutChange change) {
  for (;;) {
    if (Status s = BreakWaiting(req, cred, change); !s.ok()) return ErrnoOf(s);
    const int rc = call(req, cred);
    if (rc != ERESTART) return rc;
    // A lease came while we waited: round again.
    std::optional<engine::LayoutChange> next = LeaseEdge::TakeRefused();
    if (!next) return EIO;
    change = *next;
  }
}

Status Server::BreakWaiting(fuse_req_t req, const engine::Cred& cred,
                            const engine::LayoutChange& change) {
  std::shared_ptr<lease::WaitToken> token = leases_.table().NewWaitToken();
  InterruptScope interruptible(req, token.get());
  return leases_.table().Break(cred, change, /*nonblock=*/false, token.get());
}

int Server::DoLseek(fuse_req_t req, fuse_ino_t ino, off_t off, int whence) {
  // The kernel answers SEEK_SET/CUR/END itself and sends only these two.
  if (whence != SEEK_DATA && whence != SEEK_HOLE) return EINVAL;
  auto pos = fs_->Lseek(ino, static_cast<uint64_t>(off), whence);
  if (!pos.ok()) return ErrnoOf(pos.status());
  fuse_reply_lseek(req, static_cast<off_t>(*pos));
  return 0;
}

}  // namespace leasefs::daemon
