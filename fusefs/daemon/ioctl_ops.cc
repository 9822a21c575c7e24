// The leasefs ioctls (include/leasefs/ioctl.h) and copy_file_range: the
// FUSE edge of the engine's block-map operations (docs/block_map.md).
//
// The kernel passes these ioctls "restricted": it copies in exactly the
// command's encoded size and copies out what we reply, up to that size. We
// still check every size and field, since a caller can encode any size in a
// command number of its own making.
#include <fcntl.h>
#include <linux/falloc.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <limits>

#include "leasefs/ioctl.h"
#include "fusefs/daemon/reply.h"
#include "fusefs/daemon/server.h"
#include "engine/layout.h"

namespace leasefs::daemon {

namespace {

constexpr uint64_t kBlock = layout::kBlockSize;
constexpr uint64_t kMaxOff = static_cast<uint64_t>(std::numeric_limits<off_t>::max());

template <typename T>
bool ReadArg(const void* in, size_t in_size, T* out) {
  if (in_size != sizeof(T) || in == nullptr) return false;
  std::memcpy(out, in, sizeof(T));
  return true;
}

int FallocateMode(unsigned cmd) {
  switch (cmd) {
    case LEASEFS_IOC_COLLAPSE_RANGE:
      return FALLOC_FL_COLLAPSE_RANGE;
    case LEASEFS_IOC_INSERT_RANGE:
      return FALLOC_FL_INSERT_RANGE;
    default:
      return FALLOC_FL_UNSHARE_RANGE | FALLOC_FL_KEEP_SIZE;
  }
}

// The checks FICLONERANGE makes of its source and of the destination's open
// file, in the kernel's order (leasefs_ioctl.h, "Descriptors that name a
// second file"). Returns 0 or the errno.
int CloneSourceError(const PeerFile& src, const OpenFile& dest) {
  if (!src.same_fs) return EXDEV;
  if (src.type == S_IFDIR) return EISDIR;
  if (src.type != S_IFREG) return EINVAL;
  if (!src.readable() || !dest.writable() || dest.append()) return EBADF;
  return 0;
}

// The checks EXT4_IOC_MOVE_EXT makes of its donor, in ext4's order, except
// that a donor on another filesystem gives EXDEV (ext4 says EINVAL).
int DonorError(const PeerFile& donor) {
  if (!donor.writable()) return EBADF;
  if (!donor.same_fs) return EXDEV;
  if (donor.type != S_IFREG) return EINVAL;
  return 0;
}

}  // namespace

int Server::DoIoctl(fuse_req_t req, fuse_ino_t ino, unsigned cmd, const fuse_file_info* fi,
                    unsigned flags, const void* in, size_t in_size, size_t out_size) {
  if (cmd == LEASEFS_IOC_VERSION) {  // on files and directories alike
    if (out_size < sizeof(leasefs_version)) return EINVAL;
    leasefs_version v{};
    v.abi_version = LEASEFS_ABI_VERSION;
    v.features = LEASEFS_FEATURE_BLOCK_MAP;
    fuse_reply_ioctl(req, 0, &v, sizeof(v));
    return 0;
  }
  if (flags & FUSE_IOCTL_DIR) return ENOTTY;  // the others apply to files only
  OpenFile* const file = FileOf(fi);
  if (file == nullptr) return EBADF;  // the kernel always sends a file's handle
  const engine::Cred cred = CredOf(req);
  switch (cmd) {
    case LEASEFS_IOC_COLLAPSE_RANGE:
    case LEASEFS_IOC_INSERT_RANGE:
    case LEASEFS_IOC_UNSHARE_RANGE: {
      leasefs_range r;
      if (!ReadArg(in, in_size, &r)) return EINVAL;
      if (!file->writable()) return EBADF;  // as fallocate(2) on a read-only fd
      if (r.flags != 0 || r.reserved != 0) return EINVAL;
      if (r.offset > kMaxOff || r.length > kMaxOff || r.length == 0) return EINVAL;
      const Status s = fs_->Fallocate(cred, ino, FallocateMode(cmd), r.offset, r.length);
      if (!s.ok()) return ErrnoOf(s);
      // The kernel does not know the size may have changed.
      fuse_lowlevel_notify_inval_inode(se_, ino, 0, 0);
      fuse_reply_ioctl(req, 0, nullptr, 0);
      return 0;
    }
    case LEASEFS_IOC_CLONE_RANGE: {
      leasefs_clone_range c;
      if (!ReadArg(in, in_size, &c)) return EINVAL;
      if (c.src_offset > kMaxOff || c.src_length > kMaxOff || c.dest_offset > kMaxOff)
        return EINVAL;
      auto src = peers_->Take(*fuse_req_ctx(req), c.src_fd);
      if (!src.ok()) return ErrnoOf(src.status());
      if (int err = CloneSourceError(*src, *file); err != 0) return err;
      auto n = fs_->CloneRange(cred, src->ino, c.src_offset, ino, c.dest_offset, c.src_length);
      if (!n.ok()) return ErrnoOf(n.status());
      fuse_lowlevel_notify_inval_inode(se_, ino, 0, 0);
      fuse_reply_ioctl(req, 0, nullptr, 0);
      return 0;
    }
    case LEASEFS_IOC_DEFRAG: {
      leasefs_defrag d;
      if (!ReadArg(in, in_size, &d) || out_size < sizeof(d)) return EINVAL;
      if (d.reserved[0] || d.reserved[1]) return EINVAL;
      if (!file->writable()) return EBADF;
      // Defrag copies data a piece at a time: let a worker do it, so the
      // loop goes on serving everybody, including readers of this file. The
      // credentials go with it whole, supplementary groups read now.
      Defer(req, [this, ino, deferred = CredWithGroups(req)](fuse_req_t r) {
        auto rep = fs_->Defrag(deferred, ino);
        if (!rep.ok()) return ErrnoOf(rep.status());
        leasefs_defrag out{};
        out.extents_before = rep->extents_before;
        out.extents_after = rep->extents_after;
        out.blocks_moved = rep->blocks_moved;
        fuse_reply_ioctl(r, 0, &out, sizeof(out));
        return 0;
      });
      return 0;
    }
    case LEASEFS_IOC_BMAP: {
      leasefs_bmap b;
      if (!ReadArg(in, in_size, &b) || out_size < sizeof(b)) return EINVAL;
      if (b.start > kMaxOff) return EINVAL;
      // Runs and size from one snapshot: a concurrent truncate cannot make
      // them disagree.
      auto map = fs_->BlockMap(ino, b.start / kBlock, LEASEFS_BMAP_MAX + 1);
      if (!map.ok()) return ErrnoOf(map.status());
      const auto& runs = map->runs;
      leasefs_bmap out{};
      out.start = b.start;
      out.file_size = map->file_size;
      out.block_size = kBlock;
      const size_t n = std::min<size_t>(runs.size(), LEASEFS_BMAP_MAX);
      for (size_t i = 0; i < n; ++i) {
        const auto& r = runs[i];
        out.extents[i] = {r.file_block * kBlock, r.pool_block * kBlock, r.length * kBlock, r.flags,
                          r.refcount};
      }
      out.count = static_cast<uint32_t>(n);
      out.next = n ? out.extents[n - 1].file_offset + out.extents[n - 1].length : b.start;
      if (runs.size() > LEASEFS_BMAP_MAX) out.flags |= LEASEFS_BMAP_MORE;
      fuse_reply_ioctl(req, 0, &out, sizeof(out));
      return 0;
    }
    case LEASEFS_EXT4_IOC_MOVE_EXT: {
      leasefs_move_extent m;
      if (!ReadArg(in, in_size, &m) || out_size < sizeof(m)) return EINVAL;
      if (m.reserved != 0) return EINVAL;
      if (!file->read_write()) return EBADF;
      auto donor = peers_->Take(*fuse_req_ctx(req), m.donor_fd);
      if (!donor.ok()) return ErrnoOf(donor.status());
      if (int err = DonorError(*donor); err != 0) return err;
      auto moved = fs_->MoveExtents(cred, ino, donor->ino, m.orig_start, m.donor_start, m.len);
      if (!moved.ok()) return ErrnoOf(moved.status());
      m.moved_len = *moved;
      fuse_lowlevel_notify_inval_inode(se_, ino, 0, 0);
      fuse_lowlevel_notify_inval_inode(se_, donor->ino, 0, 0);
      fuse_reply_ioctl(req, 0, &m, sizeof(m));
      return 0;
    }
    default:
      return ENOTTY;
  }
}

int Server::DoCopyFileRange(fuse_req_t req, fuse_ino_t ino_in, off_t off_in, fuse_ino_t ino_out,
                            off_t off_out, size_t len, int flags) {
  if (flags != 0) return EINVAL;
  if (off_in < 0 || off_out < 0) return EINVAL;
  auto n = fs_->CopyFileRange(CredOf(req), ino_in, static_cast<uint64_t>(off_in), ino_out,
                              static_cast<uint64_t>(off_out), len);
  if (!n.ok()) return ErrnoOf(n.status());
  fuse_reply_write(req, static_cast<size_t>(*n));
  return 0;
}

}  // namespace leasefs::daemon
