// The attribute flags ioctls (chattr, lsattr, xfs_io's chattr): the FUSE
// edge of engine::Filesystem::GetAttrFlags/SetAttrFlags (docs/attr-flags.md).
//
// A program's FS_IOC_GETFLAGS, FS_IOC_SETFLAGS, FS_IOC_FSGETXATTR and
// FS_IOC_FSSETXATTR never reach us as they are: the VFS answers them through
// the inode's fileattr_get/fileattr_set, which FUSE implements by opening the
// file itself (OPEN or OPENDIR, O_RDONLY, as the caller) and sending one
// FUSE_IOCTL with FS_IOC_GETFLAGS or FS_IOC_SETFLAGS and a 4-byte int, or
// FS_IOC_FSGETXATTR or FS_IOC_FSSETXATTR and a struct fsxattr (Linux
// fs/fuse/ioctl.c, fs/file_attr.c). A set is preceded by an FS_IOC_FSGETXATTR:
// the VFS compares the old flags with the new ones to decide whether
// CAP_LINUX_IMMUTABLE is needed. The kernel checks ownership and that
// capability before it sends a set; we check both again, since the request
// is the caller's and we answer for the pool.
#include <fcntl.h>

#include <cerrno>
#include <cstring>
#include <string>

#include <linux/fs.h>
#include <sys/stat.h>

#include "fusefs/daemon/ioctl_args.h"
#include "fusefs/daemon/reply.h"
#include "fusefs/daemon/server.h"
#include "lease/process.h"

namespace leasefs::daemon {

namespace {

using ioctl_args::ReadArg;

constexpr int kCapLinuxImmutable = 9;  // CAP_LINUX_IMMUTABLE, <linux/capability.h>

// The FS_XFLAG_* bits and the FS_*_FL flags they stand for, as the kernel's
// fileattr_fill_xflags translates them. FS_DIRSYNC_FL has no xflag.
struct XflagBit {
  uint32_t xflag;
  uint32_t flag;
};
constexpr XflagBit kXflagBits[] = {
    {FS_XFLAG_IMMUTABLE, FS_IMMUTABLE_FL}, {FS_XFLAG_APPEND, FS_APPEND_FL},
    {FS_XFLAG_SYNC, FS_SYNC_FL},           {FS_XFLAG_NOATIME, FS_NOATIME_FL},
    {FS_XFLAG_NODUMP, FS_NODUMP_FL},
};

uint32_t ToXflags(uint32_t flags) {
  uint32_t out = 0;
  for (const XflagBit& b : kXflagBits)
    if (flags & b.flag) out |= b.xflag;
  return out;
}

// The flags an FS_IOC_FSSETXATTR asks for, keeping those no xflag names
// (FS_DIRSYNC_FL) as they are; -1 for an xflag leasefs does not keep.
int64_t FromXflags(uint32_t xflags, uint32_t old_flags) {
  uint32_t flags = old_flags & FS_DIRSYNC_FL;
  for (const XflagBit& b : kXflagBits) {
    if (xflags & b.xflag) {
      flags |= b.flag;
      xflags &= ~b.xflag;
    }
  }
  return xflags == 0 ? int64_t{flags} : -1;
}

// Whether the caller may change FS_IMMUTABLE_FL and FS_APPEND_FL: uid 0
// (leasefs's stand-in for every privilege) holding CAP_LINUX_IMMUTABLE in
// the daemon's user namespace. Root in a container without that capability is
// refused, as Linux refuses it; a caller outside the daemon's pid namespace
// (pid 0) is taken on its uid, which the kernel's own capable() check
// already vetted before it sent the request.
bool MayFreeze(fuse_req_t req) {
  const fuse_ctx* ctx = fuse_req_ctx(req);
  if (ctx->uid != 0) return false;
  if (ctx->pid <= 0) return true;
  return lease::HasCapability(ctx->pid, kCapLinuxImmutable);
}

}  // namespace

bool Server::IsAttrFlagsIoctl(unsigned cmd) {
  return cmd == FS_IOC_GETFLAGS || cmd == FS_IOC_SETFLAGS || cmd == FS_IOC_FSGETXATTR ||
         cmd == FS_IOC_FSSETXATTR;
}

int Server::DoAttrFlags(fuse_req_t req, fuse_ino_t ino, unsigned cmd, const fuse_file_info* fi,
                        const void* in, size_t in_size, size_t out_size) {
  auto flags = fs_->GetAttrFlags(ino);
  if (!flags.ok()) return ErrnoOf(flags.status());
  switch (cmd) {
    case FS_IOC_GETFLAGS: {
      // FUSE carries the flags as an int, whatever the command's number says.
      const uint32_t out = *flags;
      if (out_size != sizeof(out)) return EINVAL;
      fuse_reply_ioctl(req, 0, &out, sizeof(out));
      return 0;
    }
    case FS_IOC_FSGETXATTR: {
      if (out_size != sizeof(fsxattr)) return EINVAL;
      fsxattr x{};
      x.fsx_xflags = ToXflags(*flags);
      fuse_reply_ioctl(req, 0, &x, sizeof(x));
      return 0;
    }
    case FS_IOC_SETFLAGS: {
      uint32_t want = 0;
      if (!ReadArg(in, in_size, &want)) return EINVAL;
      return SetAttrFlags(req, ino, fi, *flags, want);
    }
    case FS_IOC_FSSETXATTR: {
      fsxattr x;
      if (!ReadArg(in, in_size, &x)) return EINVAL;
      // No project ids, extent size hints or xflags we do not keep (ext4
      // without its project feature refuses a project id the same way).
      const int64_t want = FromXflags(x.fsx_xflags, *flags);
      if (want < 0 || x.fsx_projid != 0) return EOPNOTSUPP;
      return SetAttrFlags(req, ino, fi, *flags, static_cast<uint32_t>(want));
    }
    default:
      return ENOTTY;
  }
}

int Server::SetAttrFlags(fuse_req_t req, fuse_ino_t ino, const fuse_file_info* fi, uint32_t old,
                         uint32_t want) {
  const bool may_freeze = MayFreeze(req);
  // Freezing a regular file: stores a shared mapping made before it go to
  // the pool first, and later ones are refused at writeback (WRITE), since
  // the kernel does not know the flag. Cached pages are dropped, so that the
  // next store through a mapping faults and dirties a page anew.
  const bool freezing = (want & ~old & (FS_IMMUTABLE_FL | FS_APPEND_FL)) != 0;
  std::vector<PageRange> stale;
  auto e = fs_->GetAttr(ino);
  if (!e.ok()) return ErrnoOf(e.status());
  if (freezing && S_ISREG(e->attr.st_mode)) stale.push_back({ino, 0, 0});
  // The internal open the kernel made for this request holds no lease, so
  // every lease on the file is broken before it freezes (the engine asks).
  return WithPageCache(req, CredThrough(req, FileOf(fi)), /*nonblock=*/false, stale,
                       [this, ino, want, may_freeze, stale](fuse_req_t r, const engine::Cred& c) {
                         const Status s = fs_->SetAttrFlags(c, ino, want, may_freeze);
                         if (!s.ok()) return ErrnoOf(s);
                         // ctime changed, which the kernel may hold.
                         fuse_lowlevel_notify_inval_inode(se_, ino, -1, 0);
                         DropCachedPages(stale);
                         fuse_reply_ioctl(r, 0, nullptr, 0);
                         return 0;
                       });
}

}  // namespace leasefs::daemon
