// Lookups by inode number, for file handles (docs/handles.md).
//
// A file handle names an inode by number and generation. The kernel decodes
// one (open_by_handle_at, NFS) from its own cache when it can, and asks the
// daemon otherwise, for inodes this daemon may never have been asked about:
// "the inode itself" and "the parent of this directory". The generation is
// the kernel's to compare (a reused slot has a new one); what the engine
// decides is whether the number names an inode that the namespace still
// holds.
#include <cerrno>

#include "engine/filesystem_impl.h"

namespace leasefs::engine {

using namespace layout;

namespace {

// An inode a handle may still reach: allocated and linked. An unlinked one
// (an orphan: open, or held by a mapping) is gone from the namespace, as on
// ext4 once its last link goes, and so is a removed directory.
Status Reachable(const Filesystem::Impl& fs, Ino ino) {
  if (fs.N(ino) == nullptr || fs.I(ino)->nlink == 0)
    return Status::Error(ENOENT, "no inode " + std::to_string(ino));
  return Status::Ok();
}

}  // namespace

Result<Entry> Filesystem::LookupInode(Ino ino) {
  ReaderLock l(&impl_->mu_);
  LFS_RETURN_IF_ERROR(Reachable(*impl_, ino));
  impl_->N(ino)->refs.fetch_add(1);
  return impl_->MakeEntry(ino);
}

Result<Entry> Filesystem::LookupParent(Ino dir) {
  ReaderLock l(&impl_->mu_);
  LFS_RETURN_IF_ERROR(Reachable(*impl_, dir));
  if (!impl_->N(dir)->dir) return Status::Error(ENOTDIR);
  // A linked directory's parent is linked too: rmdir needs it empty.
  const Ino parent = impl_->I(dir)->parent;
  LFS_RETURN_IF_ERROR(Reachable(*impl_, parent));
  impl_->N(parent)->refs.fetch_add(1);
  return impl_->MakeEntry(parent);
}

}  // namespace leasefs::engine
