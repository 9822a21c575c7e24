// The leasefs ioctls (include/leasefs/ioctl.h) and copy_file_range: the
// FUSE edge of the engine's block-map operations (docs/block_map.md).
//
// The kernel passes these ioctls "restricted": it copies in exactly the
// command's encoded size and copies out what we reply, up to that size. We
// still check every size and field, since a caller can encode any size in a
// command number of its own making.
#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <chrono>
#include <limits>
#include <memory>
#include <vector>

#include "leasefs/ioctl.h"
#include "fusefs/daemon/ioctl_args.h"
#include "fusefs/daemon/reply.h"
#include "fusefs/daemon/server.h"
#include "engine/layout.h"

namespace leasefs::daemon {

namespace {

using ioctl_args::kBlock;
using ioctl_args::kMaxOff;
using ioctl_args::ReadArg;

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

leasefs_lease_info ToAbi(const lease::LeaseInfo& l) {
  leasefs_lease_info o{};
  o.id = l.id;
  o.ino = l.ino;
  o.offset = l.offset;
  o.length = l.length;
  o.type = l.type;
  o.flags = l.flags;
  o.state = l.state;
  o.holder_pid = l.holder_pid;
  o.open_file = l.open_file;
  o.breaking_since = l.breaking_since;
  o.break_deadline = l.break_deadline;
  o.pins = l.pins;
  return o;
}

leasefs_event ToAbi(const lease::Event& e) {
  leasefs_event o{};
  o.seq = e.seq;
  o.time = e.time;
  o.type = e.type;
  o.why = e.why;
  o.lease_id = e.lease_id;
  o.ino = e.ino;
  o.offset = e.offset;
  o.length = e.length;
  o.lease_type = e.lease_type;
  o.holder_pid = e.holder_pid;
  o.actor_pid = e.actor_pid;
  o.err = e.err;
  return o;
}

// The longest LEASEFS_IOC_EVENTS waits: each holds a worker (and counts
// among the caller's deferred requests, Server::kMaxDeferredPerUser).
constexpr std::chrono::milliseconds kMaxEventWait{1000};

}  // namespace

int Server::DoIoctl(fuse_req_t req, fuse_ino_t ino, unsigned cmd, const fuse_file_info* fi,
                    unsigned flags, const void* in, size_t in_size, size_t out_size) {
  if (cmd == LEASEFS_IOC_VERSION) {  // on files and directories alike
    if (out_size < sizeof(leasefs_version)) return EINVAL;
    leasefs_version v{};
    v.abi_version = LEASEFS_ABI_VERSION;
    v.features = LEASEFS_FEATURE_BLOCK_MAP | LEASEFS_FEATURE_LEASES | LEASEFS_FEATURE_DAX |
                 LEASEFS_FEATURE_REMOUNT | LEASEFS_FEATURE_DEFRAG_RANGE;
    if (pins_) v.features |= LEASEFS_FEATURE_PINS | LEASEFS_FEATURE_PIN_VERBS;
    fuse_reply_ioctl(req, 0, &v, sizeof(v));
    return 0;
  }
  if (cmd == LEASEFS_IOC_REMOUNT) return DoRemount(req, ino, in, in_size, out_size);
  if (cmd == LEASEFS_IOC_LIST_LEASES) return DoListLeases(req, in, in_size, out_size);
  if (cmd == LEASEFS_IOC_EVENTS) return DoLeaseEvents(req, in, in_size, out_size);
  if (cmd == LEASEFS_IOC_DAX_INFO) return DoDaxInfo(req, out_size);
  if (cmd == LEASEFS_IOC_DAX_UNMAP) return DoDaxUnmap(req, in, in_size);
  if (cmd == LEASEFS_IOC_DAX_LIST) return DoDaxList(req, in, in_size, out_size);
  if (cmd == LEASEFS_IOC_PIN_INFO) return DoPinInfo(req, out_size);
  if (cmd == LEASEFS_IOC_UNPIN) return DoUnpin(req, in, in_size);
  if (cmd == LEASEFS_IOC_PIN_LIST) return DoPinList(req, in, in_size, out_size);
  if (IsAttrFlagsIoctl(cmd)) return DoAttrFlags(req, ino, cmd, fi, in, in_size, out_size);
  if (flags & FUSE_IOCTL_DIR) return ENOTTY;  // the others apply to files only
  OpenFile* const file = FileOf(fi);
  if (file == nullptr) return EBADF;  // the kernel always sends a file's handle
  const engine::Cred by = CredThrough(req, file);
  switch (cmd) {
    case LEASEFS_IOC_SETLEASE:
      return DoSetLease(req, *file, in, in_size, out_size);
    case LEASEFS_IOC_DAX_MAP:
      return DoDaxMap(req, *file, in, in_size, out_size);
    case LEASEFS_IOC_PIN:
      return DoPin(req, *file, in, in_size, out_size);
    case LEASEFS_IOC_GETLEASE: {
      leasefs_getlease g;
      if (!ReadArg(in, in_size, &g) || out_size < sizeof(g)) return EINVAL;
      if (g.reserved0 != 0) return EINVAL;
      g.lease = ToAbi(leases_.table().GetLease(file->id(), g.offset));
      fuse_reply_ioctl(req, 0, &g, sizeof(g));
      return 0;
    }
    case LEASEFS_IOC_COLLAPSE_RANGE:
    case LEASEFS_IOC_INSERT_RANGE:
    case LEASEFS_IOC_UNSHARE_RANGE: {
      leasefs_range r;
      if (!ReadArg(in, in_size, &r)) return EINVAL;
      if (!file->writable()) return EBADF;  // as fallocate(2) on a read-only fd
      if (r.flags != 0 || r.reserved != 0) return EINVAL;
      if (r.offset > kMaxOff || r.length > kMaxOff || r.length == 0) return EINVAL;
      // Collapse and insert move every byte from the offset on; unshare
      // moves none (cached pages stay right), only the attributes change.
      std::vector<PageRange> stale;
      if (cmd != LEASEFS_IOC_UNSHARE_RANGE) stale.push_back({ino, r.offset, 0});
      return WithPageCache(req, by, file->nonblock(), stale,
                           [this, ino, mode = FallocateMode(cmd), r, stale](
                               fuse_req_t q, const engine::Cred& c) {
                             const Status s = fs_->Fallocate(c, ino, mode, r.offset, r.length);
                             if (!s.ok()) return ErrnoOf(s);
                             // The kernel does not know the size may have changed.
                             fuse_lowlevel_notify_inval_inode(se_, ino, -1, 0);
                             DropCachedPages(stale);
                             fuse_reply_ioctl(q, 0, nullptr, 0);
                             return 0;
                           });
    }
    case LEASEFS_IOC_CLONE_RANGE: {
      leasefs_clone_range c;
      if (!ReadArg(in, in_size, &c)) return EINVAL;
      if (c.src_offset > kMaxOff || c.src_length > kMaxOff || c.dest_offset > kMaxOff)
        return EINVAL;
      auto src = peers_->Take(*fuse_req_ctx(req), c.src_fd);
      if (!src.ok()) return ErrnoOf(src.status());
      if (int err = CloneSourceError(*src, *file); err != 0) return err;
      // Our duplicate of the source stays open until the clone is done,
      // also when it waits for a break.
      auto held = std::make_shared<PeerFile>(std::move(*src));
      // The source's dirty pages are written back before the clone reads
      // it; the destination's bytes are replaced (length 0: to the end).
      const std::vector<PageRange> stale = {{held->ino, c.src_offset, c.src_length},
                                            {ino, c.dest_offset, c.src_length}};
      return WithPageCache(req, by, file->nonblock(), stale,
                           [this, ino, c, held, stale](fuse_req_t q, const engine::Cred& cr) {
                             auto n = fs_->CloneRange(cr, held->ino, c.src_offset, ino,
                                                      c.dest_offset, c.src_length);
                             if (!n.ok()) return ErrnoOf(n.status());
                             DropCachedPages(stale);
                             fuse_reply_ioctl(q, 0, nullptr, 0);
                             return 0;
                           });
    }
    case LEASEFS_IOC_DEFRAG: {
      leasefs_defrag d;
      if (!ReadArg(in, in_size, &d) || out_size < sizeof(d)) return EINVAL;
      if (!file->writable()) return EBADF;
      // The blocks holding bytes [start, start + length); a range past the
      // largest file holds none, and one running past it runs to the end.
      const uint64_t from = d.start / kBlock;
      uint64_t blocks = engine::Filesystem::kToEnd;
      if (d.length != 0 && d.length <= UINT64_MAX - d.start) {
        const uint64_t end = d.start + d.length;
        blocks = end / kBlock + (end % kBlock != 0 ? 1 : 0) - from;
      }
      // Defrag copies data a piece at a time: let a worker do it, so the
      // loop goes on serving everybody, including readers of this file. The
      // credentials go with it whole, supplementary groups read now.
      // Each piece asks the layout guard; a lease in the way is broken
      // (waiting, on this worker already) and the defrag goes on.
      engine::Cred later = CredWithGroups(req);
      later.set_open_file(file->id());
      Defer(req, [this, ino, from, blocks, later = std::move(later)](fuse_req_t r) {
        LayoutCall defrag = [this, ino, from, blocks](fuse_req_t q, const engine::Cred& c) {
          auto rep = fs_->Defrag(c, ino, from, blocks);
          if (!rep.ok()) return ErrnoOf(rep.status());
          leasefs_defrag out{};
          out.extents_before = rep->extents_before;
          out.extents_after = rep->extents_after;
          out.blocks_moved = rep->blocks_moved;
          fuse_reply_ioctl(q, 0, &out, sizeof(out));
          return 0;
        };
        const int rc = defrag(r, later);
        if (rc != ERESTART) return rc;
        auto change = LeaseEdge::TakeRefused();
        return change ? BreakAndRetry(r, later, defrag, *change) : EIO;
      });
      return 0;
    }
    case LEASEFS_IOC_BMAP: {
      leasefs_bmap b;
      if (!ReadArg(in, in_size, &b) || out_size < sizeof(b)) return EINVAL;
      if (b.start > kMaxOff || b.reserved != 0) return EINVAL;
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
      auto held = std::make_shared<PeerFile>(std::move(*donor));
      // The original's bytes are copied (its dirty pages must be written
      // back first) into blocks that then hold the donor's range. Ranges in
      // blocks, as ext4's; an overflowing one is refused by the engine.
      const std::vector<PageRange> stale = {
          {ino, m.orig_start * kBlock, m.len * kBlock},
          {held->ino, m.donor_start * kBlock, m.len * kBlock}};
      return WithPageCache(req, by, file->nonblock(), stale,
                           [this, ino, m, held, stale](fuse_req_t q,
                                                       const engine::Cred& c) mutable {
                             auto moved = fs_->MoveExtents(c, ino, held->ino, m.orig_start,
                                                           m.donor_start, m.len);
                             if (!moved.ok()) return ErrnoOf(moved.status());
                             m.moved_len = *moved;
                             DropCachedPages(stale);
                             fuse_reply_ioctl(q, 0, &m, sizeof(m));
                             return 0;
                           });
    }
    default:
      return ENOTTY;
  }
}

int Server::DoCopyFileRange(fuse_req_t req, fuse_ino_t ino_in, off_t off_in, fuse_ino_t ino_out,
                            off_t off_out, const fuse_file_info* fi_out, size_t len, int flags) {
  if (flags != 0) return EINVAL;
  if (off_in < 0 || off_out < 0) return EINVAL;
  // The change is made through the destination's open file (the source's
  // is not passed along), so a lease on the source is always somebody
  // else's here.
  const OpenFile* out = FileOf(fi_out);
  return WithBreaks(req, CredThrough(req, out), out != nullptr && out->nonblock(),
                    [this, ino_in, off_in, ino_out, off_out, len](fuse_req_t r,
                                                                   const engine::Cred& c) {
                      auto n = fs_->CopyFileRange(c, ino_in, static_cast<uint64_t>(off_in),
                                                  ino_out, static_cast<uint64_t>(off_out), len);
                      if (!n.ok()) return ErrnoOf(n.status());
                      fuse_reply_write(r, static_cast<size_t>(*n));
                      return 0;
                    });
}

}  // namespace leasefs::daemon

namespace leasefs::daemon {

int Server::DoSetLease(fuse_req_t req, const OpenFile& file, const void* in, size_t in_size,
                       size_t out_size) {
  leasefs_lease l;
  if (!ReadArg(in, in_size, &l) || out_size < sizeof(l)) return EINVAL;
  if (l.reserved0 != 0 || l.reserved[0] != 0 || l.reserved[1] != 0) return EINVAL;
  // As F_SETLEASE: regular files only; the unbreakable kinds only for the
  // file's owner (or root, standing in for CAP_LEASE).
  auto e = fs_->GetAttr(file.ino());
  if (!e.ok()) return ErrnoOf(e.status());
  if (!S_ISREG(e->attr.st_mode)) return EINVAL;
  // A WRITE lease is for changing the file's layout, which an immutable or
  // append-only file's holder may not (docs/attr-flags.md).
  if (l.type == LEASEFS_LEASE_WRITE && (e->attr_flags & (FS_IMMUTABLE_FL | FS_APPEND_FL)))
    return EPERM;
  const fuse_ctx* ctx = fuse_req_ctx(req);
  lease::Holder holder;
  holder.open_file = file.id();
  holder.ino = file.ino();
  holder.tid = ctx->pid;
  holder.uid = ctx->uid;
  holder.may_unbreak = ctx->uid == 0 || ctx->uid == e->attr.st_uid;
  // A lease makes other writers wait up to the break time. Linux lets only
  // the owner take one; we also let whoever opened the file for writing
  // (who could change it anyway), but not a mere reader.
  if (l.type != LEASEFS_LEASE_UNLOCK && !holder.may_unbreak && !file.writable()) return EACCES;
  lease::LeaseRequest r;
  r.offset = l.offset;
  r.length = l.length;
  r.type = l.type;
  r.flags = l.flags;
  r.signal = l.signal;
  r.sigval = l.sigval;
  r.convert = l.id;
  auto reply = [l](fuse_req_t q, lease::LeaseId id) mutable {
    l.id = id;
    fuse_reply_ioctl(q, 0, &l, sizeof(l));
    return 0;
  };
  // Try without waiting on the loop; only a break in progress makes a new
  // lease wait, and that wait goes to a worker.
  lease::LeaseRequest now = r;
  now.flags |= LEASEFS_LEASE_NONBLOCK;
  auto id = leases_.table().SetLease(holder, now, nullptr);
  if (id.ok()) return reply(req, *id);
  if (id.status().err() != EWOULDBLOCK || (l.flags & LEASEFS_LEASE_NONBLOCK))
    return ErrnoOf(id.status());
  Defer(req, [this, holder, r, reply](fuse_req_t q) mutable {
    std::shared_ptr<lease::WaitToken> token = leases_.table().NewWaitToken();
    Result<lease::LeaseId> granted = Status::Error(EINTR);
    {
      InterruptScope interruptible(q, token.get());
      granted = leases_.table().SetLease(holder, r, token.get());
    }
    if (!granted.ok()) return ErrnoOf(granted.status());
    // A caller killed while it waited no longer holds the request's file,
    // which may have been released meanwhile: its lease would stay forever.
    if (files_.Find(holder.open_file) == nullptr) {
      leases_.table().CloseOpenFile(holder.open_file);
      return EBADF;
    }
    return reply(q, *granted);
  });
  return 0;
}

int Server::DoListLeases(fuse_req_t req, const void* in, size_t in_size, size_t out_size) {
  auto list = std::make_unique<leasefs_lease_list>();
  if (!ReadArg(in, in_size, list.get()) || out_size < sizeof(*list)) return EINVAL;
  if (list->reserved[0] != 0 || list->reserved[1] != 0) return EINVAL;
  const uint64_t after = list->after;
  bool more = false;
  const std::vector<lease::LeaseInfo> leases =
      leases_.table().List(after, LEASEFS_LIST_MAX, &more);
  *list = leasefs_lease_list{};
  list->after = after;
  list->count = static_cast<uint32_t>(leases.size());
  list->flags = more ? LEASEFS_LIST_MORE : 0;
  for (size_t i = 0; i < leases.size(); ++i) list->leases[i] = ToAbi(leases[i]);
  fuse_reply_ioctl(req, 0, list.get(), sizeof(*list));
  return 0;
}

int Server::DoLeaseEvents(fuse_req_t req, const void* in, size_t in_size, size_t out_size) {
  leasefs_events head;
  if (!ReadArg(in, in_size, &head) || out_size < sizeof(head)) return EINVAL;
  if (head.reserved[0] != 0 || head.reserved[1] != 0) return EINVAL;
  const uint64_t after = head.after;
  auto reply = [after](fuse_req_t q, const std::vector<lease::Event>& events, uint64_t lost) {
    auto out = std::make_unique<leasefs_events>();
    out->after = after;
    out->count = static_cast<uint32_t>(events.size());
    out->lost = lost;
    for (size_t i = 0; i < events.size(); ++i) out->events[i] = ToAbi(events[i]);
    fuse_reply_ioctl(q, 0, out.get(), sizeof(*out));
    return 0;
  };
  uint64_t lost = 0;
  auto now = leases_.table().Events(after, LEASEFS_EVENTS_MAX, std::chrono::milliseconds(0),
                                    nullptr, &lost);
  if (!now.ok()) return ErrnoOf(now.status());
  if (!now->empty() || lost != 0 || head.timeout_ms == 0) return reply(req, *now, lost);
  // Nothing yet: wait on a worker, for at most a second.
  const auto timeout = std::min(kMaxEventWait, std::chrono::milliseconds(head.timeout_ms));
  Defer(req, [this, after, timeout, reply](fuse_req_t q) {
    std::shared_ptr<lease::WaitToken> token = leases_.table().NewWaitToken();
    uint64_t missed = 0;
    Result<std::vector<lease::Event>> events = Status::Error(EINTR);
    {
      InterruptScope interruptible(q, token.get());
      events = leases_.table().Events(after, LEASEFS_EVENTS_MAX, timeout, token.get(), &missed);
    }
    return events.ok() ? reply(q, *events, missed) : ErrnoOf(events.status());
  });
  return 0;
}

}  // namespace leasefs::daemon
