// Changes of a mounted pool's options while it stays mounted: read-only and
// back, and the atime rule (docs/mount.md, "Remount").
#include <cerrno>
#include <cstring>
#include <utility>

#include "base/clock.h"
#include "engine/filesystem_impl.h"

namespace leasefs::engine {

using namespace layout;

void Filesystem::Impl::WriteState(bool clean) {
  auto* msb = reinterpret_cast<Superblock*>(media_->base());
  if (clean) {
    // Timestamps written in place by reads and overwrites become durable
    // here, before the pool says it needs no recovery.
    // (Only the initialized slots: nothing past the mark is ever written.)
    media_->Flush(I(0), marks_.inodes * sizeof(Inode));
    msb->last_unmount_ns = NowNs();
    media_->Persist(&msb->last_unmount_ns, sizeof(int64_t));
  }
  // The mutable area: one aligned 8-byte store (state + reserved1),
  // persisted; a hint for fsck, not part of any transaction.
  const uint64_t state_word = clean ? kStateClean : kStateMounted;
  std::memcpy(&msb->state, &state_word, sizeof(state_word));
  media_->Persist(&msb->state, sizeof(state_word));
}

void Filesystem::Impl::ReclaimUnreferenced() {
  for (Ino ino = 1; ino < nodes_.size(); ++ino) {
    const Node* n = N(ino);
    if (n != nullptr && I(ino)->nlink == 0 && n->refs.load() == 0) FreeInode(ino);
  }
}

Status Filesystem::SetReadOnly(bool read_only, bool dry_run) {
  Impl& fs = *impl_;
  WriterLock l(&fs.mu_);  // no change is under way, and none starts
  if (read_only == fs.read_only_) return Status::Ok();
  if (!read_only) {
    if (fs.mapped_read_only_)
      return Status::Error(EROFS,
                           "the pool was mounted read-only (-o ro) and is mapped privately: "
                           "unmount it and mount it read-write");
    if (dry_run) return Status::Ok();
    fs.WriteState(/*clean=*/false);
    fs.read_only_ = false;
    fs.ReclaimUnreferenced();
    fs.ClearRecords(std::exchange(fs.undropped_records_, {}));
    return Status::Ok();
  }
  // A writable DAX mapping or pin may store into the pool behind the
  // engine's back, and dropping its records writes the pool: as the kernel
  // refuses a read-only remount while files are open for writing. A
  // read-only mapping stays (its records are cleared when the pool is
  // writable again, or by the next mount).
  const size_t writable = fs.WritableRecords();
  if (writable != 0)
    return Status::Error(EBUSY, std::to_string(writable) +
                                    " writable DAX mapping records are in use (mappings or pins; "
                                    "`leasectl dax` lists them)");
  if (dry_run) return Status::Ok();
  fs.read_only_ = true;
  // As an unmount leaves it: a crash while read-only needs no recovery.
  fs.WriteState(/*clean=*/true);
  return Status::Ok();
}

void Filesystem::SetAtime(AtimeMode atime, bool nodiratime) {
  WriterLock l(&impl_->mu_);  // TouchAtime reads them under a shared lock
  impl_->options_.atime = atime;
  impl_->options_.nodiratime = nodiratime;
}

bool Filesystem::read_only() const { return impl_->read_only_; }

}  // namespace leasefs::engine
