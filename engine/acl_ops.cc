// POSIX ACLs on inodes: system.posix_acl_access and system.posix_acl_default
// through the xattr calls, inheritance on create, and the ACL part of the
// permission check. The rules are ext4's (fs/posix_acl.c, fs/ext4/acl.c);
// docs/acl.md says what leasefs decided where they leave room.
//
// Storage: each list is an xattr of the inode under its own name, in the
// kernel's format (engine/acl.h). The mode is the one record of the bits an
// access ACL shares with it (USER_OBJ, MASK or GROUP_OBJ without a MASK,
// OTHER): a set writes them into the mode in the same transaction as the
// list, and every read of the list takes them from the mode, so chmod
// changes the mode alone and the two can never disagree, even across a
// crash or a chmod by a leasefs that knows nothing of ACLs.
#include <sys/stat.h>
#include <unistd.h>

#include <optional>
#include <string>
#include <vector>

#include "base/clock.h"
#include "engine/acl.h"
#include "engine/filesystem_impl.h"

namespace leasefs::engine {

using namespace layout;

namespace {

constexpr mode_t kPermBits = 0777;

// A stored list, parsed. Errors: EIO when the stored value does not parse
// (the pool is damaged; fsck reports it).
Result<std::optional<acl::Acl>> Stored(const Filesystem::Impl& fs, Ino ino, std::string_view name) {
  LFS_ASSIGN_OR_RETURN(const std::optional<std::string> value, fs.XattrValue(ino, name));
  if (!value) return std::optional<acl::Acl>();
  auto parsed = acl::Parse(*value);
  if (!parsed.ok())
    return Status::Error(EIO, "inode " + std::to_string(ino) + ": damaged " + std::string(name));
  return std::optional<acl::Acl>(std::move(*parsed));
}

}  // namespace

Result<std::optional<acl::Acl>> Filesystem::Impl::AccessAcl(Ino ino) const {
  LFS_ASSIGN_OR_RETURN(std::optional<acl::Acl> a, Stored(*this, ino, acl::kAccessXattr));
  if (a) acl::ApplyMode(&*a, I(ino)->mode);
  return a;
}

bool Filesystem::Impl::AclPermits(const Cred& c, Ino ino, int mask, bool* decided) const {
  *decided = false;
  auto a = AccessAcl(ino);
  if (!a.ok()) {
    // A damaged list decides, and grants nothing: the mode's group bits are
    // its mask, and the owning group may have been meant to get less.
    *decided = true;
    return false;
  }
  if (!*a) return false;
  *decided = true;
  const Inode& in = *I(ino);
  const acl::Asker who{c.uid(), [&c](gid_t g) { return c.InGroup(g); }};
  return acl::Permits(**a, in.uid, in.gid, who, mask);
}

Result<std::string> Filesystem::Impl::GetAcl(Ino ino, std::string_view name) const {
  auto a = name == acl::kAccessXattr ? AccessAcl(ino) : Stored(*this, ino, name);
  if (!a.ok()) return a.status();
  if (!*a) return Status::Error(ENODATA);
  return acl::Encode(**a);
}

// The checks every change of an ACL makes, in the kernel's order
// (vfs_set_acl, set_posix_acl): a read-only mount, a symlink (its inode
// operations have no set_acl), a default ACL of a non-directory, then the
// owner. Returns true in *noop when the change is a removal of a default
// ACL of a non-directory, which the kernel answers with success.
Status Filesystem::Impl::MayChangeAcl(const Cred& c, Ino ino, std::string_view name, bool set,
                                      bool* noop) const {
  *noop = false;
  if (read_only_) return Status::Error(EROFS);
  const Inode& in = *I(ino);
  if (S_ISLNK(in.mode)) return Status::Error(EOPNOTSUPP, "symlinks have no ACLs");
  if (name == acl::kDefaultXattr && !S_ISDIR(in.mode)) {
    if (set) return Status::Error(EACCES, "only directories have default ACLs");
    *noop = true;
    return Status::Ok();
  }
  if (!OwnerOrRoot(c, in)) return Status::Error(EPERM, "only the owner may change an ACL");
  return Status::Ok();
}

Status Filesystem::Impl::SetAcl(const Cred& c, Ino ino, std::string_view name,
                                std::string_view value) {
  // A malformed value is refused before anything else, as the kernel parses
  // it before it looks at the inode.
  LFS_ASSIGN_OR_RETURN(const acl::Acl a, acl::Parse(value));
  bool noop;
  LFS_RETURN_IF_ERROR(MayChangeAcl(c, ino, name, /*set=*/true, &noop));
  Inode img = *I(ino);
  const std::string encoded = acl::Encode(a);
  std::vector<XattrChange> change;
  if (name == acl::kDefaultXattr) {
    // A default ACL is kept as given, even one equal to a mode: it is what
    // new inodes get.
    change.push_back({name, encoded});
  } else {
    // posix_acl_update_mode: the mode takes the list's bits; a list that
    // says no more than the mode is not kept (one kept before goes); and
    // setgid goes unless the caller is in the file's group or is root.
    img.mode = (img.mode & ~kPermBits) | acl::ModeBits(a);
    if (!c.is_root() && !c.InGroup(img.gid)) img.mode &= ~S_ISGID;
    if (acl::EquivalentToMode(a)) {
      change.push_back({name, std::nullopt});
    } else {
      change.push_back({name, encoded});
    }
  }
  img.ctime_ns = NowNs();
  // One transaction: the list and the mode it implies are never seen apart.
  Op op(*this);
  LFS_RETURN_IF_ERROR(StageXattrChanges(op, ino, change));
  StageAttrs(op, ino, img);
  op.Commit();
  return Status::Ok();
}

Status Filesystem::Impl::RemoveAcl(const Cred& c, Ino ino, std::string_view name) {
  bool noop;
  LFS_RETURN_IF_ERROR(MayChangeAcl(c, ino, name, /*set=*/false, &noop));
  // Removing a list the inode does not have succeeds, as on ext4 and XFS
  // (setfacl -b, -k on any file); the mode stays as it is.
  if (noop || !HasXattr(ino, name)) return Status::Ok();
  Inode img = *I(ino);
  img.ctime_ns = NowNs();
  Op op(*this);
  LFS_RETURN_IF_ERROR(StageXattrChanges(op, ino, {{name, std::nullopt}}));
  StageAttrs(op, ino, img);
  op.Commit();
  return Status::Ok();
}

Result<Filesystem::Impl::Inherited> Filesystem::Impl::InheritAcls(const Cred& c, Ino parent,
                                                                  uint32_t* mode) const {
  Inherited out;
  // posix_acl_create: symlinks get neither an ACL nor the umask.
  if (S_ISLNK(*mode)) return out;
  LFS_ASSIGN_OR_RETURN(std::optional<acl::Acl> dflt, Stored(*this, parent, acl::kDefaultXattr));
  if (!dflt) {
    *mode &= ~(c.umask() & kPermBits);
    return out;
  }
  // The parent's default ACL replaces the umask: it narrows the requested
  // mode, and becomes the new inode's access ACL unless that says no more
  // than the mode; a directory also takes it as its own default ACL.
  acl::Acl access = *dflt;
  mode_t m = *mode;
  if (acl::CreateMasq(&access, &m)) out.access = acl::Encode(access);
  *mode = m;
  if (S_ISDIR(*mode)) out.dflt = acl::Encode(*dflt);
  return out;
}

std::vector<Filesystem::Impl::XattrChange> Filesystem::Impl::Inherited::Changes() const {
  std::vector<XattrChange> changes;
  if (access) changes.push_back({acl::kAccessXattr, *access});
  if (dflt) changes.push_back({acl::kDefaultXattr, *dflt});
  return changes;
}

}  // namespace leasefs::engine
