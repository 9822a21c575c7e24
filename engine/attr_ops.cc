// Attribute flags: what chattr(1) sets through FS_IOC_SETFLAGS, kept in the
// inode's flags word (docs/attr-flags.md says what each flag does, and where
// the rules come from). The checks that enforce immutable and append-only
// sit in every operation that could break them; the helpers they share are
// here.
#include <cerrno>

#include <linux/fs.h>

#include "base/clock.h"
#include "engine/filesystem_impl.h"
#include "engine/superblock.h"

namespace leasefs::engine {

using namespace layout;

namespace {

// Each stored flag and the FS_*_FL bit it stands for.
struct FlagBit {
  uint32_t inode;
  uint32_t fs;
};
constexpr FlagBit kFlagBits[] = {
    {kInodeSync, FS_SYNC_FL},       {kInodeImmutable, FS_IMMUTABLE_FL},
    {kInodeAppend, FS_APPEND_FL},   {kInodeNodump, FS_NODUMP_FL},
    {kInodeNoatime, FS_NOATIME_FL}, {kInodeDirsync, FS_DIRSYNC_FL},
};

uint32_t ToInodeFlags(uint32_t fs_flags) {
  uint32_t out = 0;
  for (const FlagBit& b : kFlagBits)
    if (fs_flags & b.fs) out |= b.inode;
  return out;
}

// The FS_*_FL flags an inode of `mode` may carry (ext4's masks: DIRSYNC is
// for directories only).
uint32_t SupportedFsFlags(uint32_t mode) {
  uint32_t out = 0;
  const uint32_t allowed = S_ISDIR(mode) ? kDirAttrFlags : kRegularAttrFlags;
  for (const FlagBit& b : kFlagBits)
    if (allowed & b.inode) out |= b.fs;
  return out;
}

}  // namespace

uint32_t Filesystem::Impl::FsFlagsOf(const Inode& in) {
  uint32_t out = 0;
  for (const FlagBit& b : kFlagBits)
    if (in.flags & b.inode) out |= b.fs;
  return out;
}

uint32_t Filesystem::Impl::InheritedFlags(const Inode& dir, uint32_t mode) {
  // ext4 passes sync, nodump, noatime and dirsync down (EXT4_FL_INHERITED),
  // masked for the new inode's type; the rest (immutable, append-only) are
  // set on purpose or not at all.
  constexpr uint32_t kInherited = kInodeSync | kInodeNodump | kInodeNoatime | kInodeDirsync;
  const uint32_t allowed = S_ISDIR(mode) ? kDirAttrFlags : S_ISREG(mode) ? kRegularAttrFlags : 0u;
  return dir.flags & kInherited & allowed;
}

Status Filesystem::Impl::CheckMutable(Ino ino) const {
  return Immutable(ino) ? Status::Error(EPERM, "immutable") : Status::Ok();
}

Status Filesystem::Impl::CheckRewritable(Ino ino) const {
  LFS_RETURN_IF_ERROR(CheckMutable(ino));
  return AppendOnly(ino) ? Status::Error(EPERM, "append-only") : Status::Ok();
}

void Filesystem::Impl::AddFeatures(uint64_t ro_compat, uint64_t incompat) {
  const Superblock& sb = *pool_.sb;
  if ((sb.feature_ro_compat & ro_compat) == ro_compat &&
      (sb.feature_incompat & incompat) == incompat)
    return;
  // Backup first, each copy durable before the next: a crash leaves either
  // copy old or new, or the primary torn, which the next mount (and fsck)
  // restores from the backup (IsTornUpgrade). Only then may the first user
  // of the feature commit.
  const Superblock next = WithFeatures(sb, ro_compat, incompat);
  WriteSuperblockCopy(*media_, kBackupSuperBlock, next);
  WriteSuperblockCopy(*media_, kSuperBlock, next);
}

Result<uint32_t> Filesystem::GetAttrFlags(Ino ino) {
  ReaderLock l(&impl_->mu_);
  LFS_RETURN_IF_ERROR(impl_->Get(ino).status());
  return Impl::FsFlagsOf(*impl_->I(ino));
}

namespace {

// What FS_IOC_SETFLAGS checks before anything changes, in the order of
// Linux's vfs_fileattr_set (owner, then CAP_LINUX_IMMUTABLE) and ext4's
// ext4_fileattr_set (unsupported flags, then the immutable file's other
// flags).
Status CheckSetAttrFlags(const Filesystem::Impl& fs, const Cred& c, Ino ino, uint32_t flags,
                         bool may_freeze) REQUIRES_SHARED(fs.mu_) {
  const Inode& in = *fs.I(ino);
  if (!S_ISREG(in.mode) && !S_ISDIR(in.mode))
    return Status::Error(ENOTTY, "attribute flags are for regular files and directories");
  if (!fs.OwnerOrRoot(c, in)) return Status::Error(EPERM, "not the owner");
  const uint32_t old_flags = Filesystem::Impl::FsFlagsOf(in);
  if (((old_flags ^ flags) & (FS_IMMUTABLE_FL | FS_APPEND_FL)) && !may_freeze)
    return Status::Error(EPERM, "changing immutable or append-only needs CAP_LINUX_IMMUTABLE");
  if (flags & ~SupportedFsFlags(in.mode))
    return Status::Error(EOPNOTSUPP, "a flag leasefs does not keep");
  if ((old_flags & flags & FS_IMMUTABLE_FL) && old_flags != flags)
    return Status::Error(EPERM, "an immutable file's other flags cannot change");
  return Status::Ok();
}

}  // namespace

Status Filesystem::SetAttrFlags(const Cred& c, Ino ino, uint32_t flags, bool may_freeze) {
  Impl& fs = *impl_;
  WriterLock l(&fs.mu_);
  LFS_RETURN_IF_ERROR(fs.Get(ino).status());
  if (fs.read_only_) return Status::Error(EROFS);
  LFS_RETURN_IF_ERROR(CheckSetAttrFlags(fs, c, ino, flags, may_freeze));
  Inode img = *fs.I(ino);
  const uint32_t now_set = ToInodeFlags(flags);
  const bool freezing = (now_set & ~img.flags & (kInodeImmutable | kInodeAppend)) != 0;
  if (freezing && S_ISREG(img.mode)) {
    // A lease holder may store into the file through DAX (a READ lease
    // suffices for blocks it owns alone), where the daemon cannot refuse
    // the store: its leases are broken first, and a mapping that outlives
    // them keeps the flag off.
    LayoutChange whole;
    whole.ino = ino;
    whole.kind = LayoutChangeKind::kUnmap;
    whole.offset = 0;
    whole.length = LayoutChange::kToEnd;
    whole.old_size = whole.new_size = img.size;
    LFS_RETURN_IF_ERROR(fs.GuardChange(c, whole));
    const uint64_t blocks = (img.size + kBlockSize - 1) / kBlockSize;
    if (fs.SharesWritablyCovered(ino, 0, blocks))
      return Status::Error(EBUSY, "a process may still store into the file through DAX");
  }
  // The superblock says that inodes may carry flags before the first one
  // does (durable before the transaction below commits).
  if (now_set != 0) fs.AddFeatures(kRoCompatAttrFlags, 0);
  img.flags = (img.flags & ~kDirAttrFlags) | now_set;
  img.ctime_ns = NowNs();
  Op op(fs);
  fs.StageAttrs(op, ino, img);
  op.Commit();
  return Status::Ok();
}

}  // namespace leasefs::engine
