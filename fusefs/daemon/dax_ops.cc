// The DAX ioctls (include/leasefs/ioctl.h, "the DAX path"; docs/dax.md): the
// pool's whereabouts, handing out a leased range's blocks, the holder's
// confirmation that it dropped them, and the list of mappings.
#include <algorithm>
#include <cerrno>
#include <cstring>
#include <limits>
#include <memory>

#include "engine/layout.h"
#include "fusefs/daemon/ioctl_args.h"
#include "fusefs/daemon/reply.h"
#include "fusefs/daemon/server.h"
#include "leasefs/ioctl.h"

namespace leasefs::daemon {

using ioctl_args::kBlock;
using ioctl_args::kMaxOff;
using ioctl_args::ReadArg;

int Server::DoDaxInfo(fuse_req_t req, size_t out_size) {
  if (out_size < sizeof(leasefs_dax_info)) return EINVAL;
  auto info = std::make_unique<leasefs_dax_info>();
  const auto* sb = reinterpret_cast<const layout::Superblock*>(fs_->media().base());
  info->pool_bytes = sb->pool_bytes;
  std::memcpy(info->uuid, sb->uuid, sizeof(info->uuid));
  info->block_size = kBlock;
  const size_t n = std::min(pool_path_.size(), sizeof(info->path) - 1);
  std::memcpy(info->path, pool_path_.data(), n);
  info->path_len = static_cast<uint32_t>(n);
  fuse_reply_ioctl(req, 0, info.get(), sizeof(*info));
  return 0;
}

int Server::DaxLeaseCovers(const OpenFile& file, uint64_t off, uint64_t len, bool* all_write) {
  // One open file's leases never overlap, so the leases covering the range
  // follow one another; walk them.
  const uint64_t end = off + len;
  *all_write = true;
  for (uint64_t pos = off; pos < end;) {
    const lease::LeaseInfo l = leases_.table().GetLease(file.id(), pos);
    // A ZOMBIE lease is nobody's now (its process died with a fork still
    // sharing the open file): as no lease at all.
    if (l.state == LEASEFS_STATE_NONE || l.state == LEASEFS_STATE_ZOMBIE) return EPERM;
    if (l.state != LEASEFS_STATE_ACTIVE) return EAGAIN;
    if (l.type != LEASEFS_LEASE_WRITE) *all_write = false;
    if (l.length == 0) break;  // to the end of the file, whatever its size
    pos = l.offset + l.length;
  }
  return 0;
}

bool Server::DaxNeedsBlocks(engine::Ino ino, uint64_t off, uint64_t len) {
  // Exactly the blocks a write of the same bytes would map anew (holes,
  // reflinked blocks; unwritten ones are the file's own), up to the end of
  // the file, past which nothing is handed out.
  auto e = fs_->GetAttr(ino);
  if (!e.ok()) return true;
  const auto size = static_cast<uint64_t>(e->attr.st_size);
  return size > off && fs_->WouldAllocate(ino, off, std::min(len, size - off));
}

int Server::DoDaxMap(fuse_req_t req, const OpenFile& file, const void* in, size_t in_size,
                     size_t out_size) {
  auto m = std::make_shared<leasefs_dax_map>();
  if (!ReadArg(in, in_size, m.get()) || out_size < sizeof(*m)) return EINVAL;
  if ((m->flags & ~LEASEFS_DAX_WRITE) != 0) return EINVAL;
  const uint64_t off = m->offset, len = m->length;
  if (off % kBlock != 0 || len % kBlock != 0 || len == 0 || off > kMaxOff ||
      len > kMaxOff - off) {
    return EINVAL;
  }
  const bool write = (m->flags & LEASEFS_DAX_WRITE) != 0;
  if (write && !file.writable()) return EBADF;  // as mmap(PROT_WRITE, MAP_SHARED)
  // A quick answer for the common mistakes; checked again on the worker.
  bool quick_all_write = false;
  if (int err = DaxLeaseCovers(file, off, len, &quick_all_write); err != 0) return err;
  const fuse_ctx* ctx = fuse_req_ctx(req);
  auto proc = DaxMaps::Identify(ctx->pid);
  if (!proc.ok()) return ErrnoOf(proc.status());
  const uid_t uid = ctx->uid;
  const uint64_t map_id = dax_->NextId();
  const uint64_t file_id = file.id();
  const engine::Ino ino = file.ino();
  const bool nonblock = file.nonblock();
  engine::Cred later = CredWithGroups(req);
  later.set_open_file(file_id);
  // Filling holes may zero many blocks, and plain mappings' dirty pages go
  // back to the pool first: off the loop, where pages may be dropped.
  DeferFlushing(req, [this, m, off, len, write, proc = *proc, uid, map_id, file_id, ino, nonblock,
                      later = std::move(later)](fuse_req_t r) {
    LayoutCall call = [this, m, off, len, write, proc, uid, map_id, file_id, ino](
                          fuse_req_t q, const engine::Cred& c) {
      std::shared_ptr<OpenFile> f = files_.Find(file_id);
      if (f == nullptr) return EBADF;  // released while we waited
      bool all_write = false;
      if (int err = DaxLeaseCovers(*f, off, len, &all_write); err != 0) return err;
      // Stores through a mapping change no layout, so any layout lease will
      // do for them, as it did for RDMA in the debate; but giving the range
      // blocks of its own is the holder's layout change, which only its
      // WRITE lease survives.
      if (write && !all_write && DaxNeedsBlocks(ino, off, len)) return EPERM;
      // The kernel's cached pages of the range (plain mappings of the file)
      // are written back and dropped: the holder sees their stores, and they
      // read the pool again when next touched (docs/mmap.md, "DAX").
      if (SharedMappings()) DropCachedPages({{ino, off, len}});
      auto allowance = dax_->Allowance(uid, LEASEFS_DAX_MAX);  // reserved until settled
      if (!allowance.ok()) return ErrnoOf(allowance.status());
      auto got = fs_->MapForDax(c, ino, off, len, write, map_id, proc.owner, *allowance);
      if (!got.ok()) {
        dax_->GiveBack(uid, *allowance);
        return ErrnoOf(got.status());
      }
      leasefs_dax_map& out = *m;
      const uint32_t flags = out.flags;
      out = leasefs_dax_map{};
      out.offset = off;
      out.length = got->covered;
      out.flags = flags;
      out.map_id = map_id;
      out.file_size = got->file_size;
      size_t records = 0;
      const size_t n = std::min<size_t>(got->runs.size(), LEASEFS_DAX_MAX);
      for (size_t i = 0; i < n; ++i) {
        const auto& run = got->runs[i];
        out.extents[i].file_offset = run.file_block * kBlock;
        out.extents[i].pool_offset = run.hole ? 0 : run.pool_block * kBlock;
        out.extents[i].length = run.length * kBlock;
        out.extents[i].flags = run.hole ? LEASEFS_DAX_HOLE : 0;
        records += !run.hole;
      }
      out.count = static_cast<uint32_t>(n);
      const auto* sb = reinterpret_cast<const layout::Superblock*>(fs_->media().base());
      std::memcpy(out.pool_uuid, sb->uuid, sizeof(out.pool_uuid));
      if (records == 0) {
        dax_->GiveBack(uid, *allowance);
      } else if (!dax_->Add(proc, uid, map_id, file_id, records, *allowance,
                            DaxMaps::Range{ino, off, got->covered, write})) {
        return ENOMEM;  // its records are gone: the extents must not go out
      }
      // A caller that can no longer hear the answer cannot have mapped it.
      if (fuse_reply_ioctl(q, 0, &out, sizeof(out)) != 0 && records > 0) {
        (void)dax_->Unmap(proc, map_id);
      }
      return 0;
    };
    const int rc = call(r, later);
    if (rc != ERESTART) return rc;
    // As any layout change through an O_NONBLOCK descriptor: start the
    // breaks, do not wait for them.
    if (nonblock) return BreakThenRetry(r, later, true, call);
    auto change = LeaseEdge::TakeRefused();
    return change ? BreakAndRetry(r, later, call, *change) : EIO;
  });
  return 0;
}

int Server::DoDaxUnmap(fuse_req_t req, const void* in, size_t in_size) {
  leasefs_dax_unmap u;
  if (!ReadArg(in, in_size, &u)) return EINVAL;
  if (u.reserved[0] != 0 || u.reserved[1] != 0 || u.reserved[2] != 0) return EINVAL;
  auto proc = DaxMaps::Identify(fuse_req_ctx(req)->pid);
  if (!proc.ok()) return ErrnoOf(proc.status());
  auto dropped = dax_->Unmap(*proc, u.map_id);
  if (!dropped.ok()) return ErrnoOf(dropped.status());
  // What the holder stored, plain mappings of the file must read again.
  std::vector<PageRange> stale;
  for (const DaxMaps::Range& r : *dropped) {
    if (r.writable && r.length > 0) stale.push_back({r.ino, r.offset, r.length});
  }
  if (stale.empty() || !SharedMappings()) {
    fuse_reply_ioctl(req, 0, nullptr, 0);
    return 0;
  }
  DeferFlushing(req, [this, stale = std::move(stale)](fuse_req_t r) {
    DropCachedPages(stale);
    fuse_reply_ioctl(r, 0, nullptr, 0);
    return 0;
  });
  return 0;
}

int Server::DoDaxList(fuse_req_t req, const void* in, size_t in_size, size_t out_size) {
  auto list = std::make_unique<leasefs_dax_list>();
  if (!ReadArg(in, in_size, list.get()) || out_size < sizeof(*list)) return EINVAL;
  if (list->reserved[0] != 0 || list->reserved[1] != 0) return EINVAL;
  const uint64_t after = list->after;
  const auto records = fs_->ReachRecords();  // in map_id order
  const auto infos = dax_->Infos();
  // Where other users' files lie in the pool and which processes map them
  // is theirs: a user other than root sees its own mappings (and the totals).
  const uid_t caller = fuse_req_ctx(req)->uid;
  auto visible = [&](uint64_t map_id) {
    if (caller == 0) return true;
    const auto it = infos.find(map_id);
    return it != infos.end() && it->second.uid == caller;
  };
  const auto stats = fs_->Quarantine();
  *list = leasefs_dax_list{};
  list->after = after;
  list->quarantined_total = stats.quarantined * kBlock;
  list->records_total = stats.records;
  list->records_max = stats.capacity;
  size_t i = 0;
  while (i < records.size() && records[i].map_id <= after) ++i;
  // Whole mappings only (one has at most LEASEFS_DAX_MAX records), so that
  // `after` continues exactly.
  static_assert(LEASEFS_DAX_MAX <= LEASEFS_DAX_LIST_MAX);
  while (i < records.size()) {
    size_t j = i;
    while (j < records.size() && records[j].map_id == records[i].map_id) ++j;
    if (!visible(records[i].map_id)) {
      i = j;
      continue;
    }
    if (list->count + (j - i) > LEASEFS_DAX_LIST_MAX) {
      list->flags |= LEASEFS_LIST_MORE;
      break;
    }
    const auto info = infos.find(records[i].map_id);
    for (; i < j; ++i) {
      const auto& r = records[i];
      leasefs_dax_record& o = list->records[list->count++];
      o.map_id = r.map_id;
      o.ino = r.ino;
      o.file_offset = r.file_block * kBlock;
      o.pool_offset = r.pool_block * kBlock;
      o.length = r.length * kBlock;
      o.quarantined = r.quarantined * kBlock;
      o.owner_pid = r.owner.pid;
      o.flags = r.writable ? LEASEFS_DAX_REC_WRITE : 0;
      if (info == infos.end() || info->second.restart) o.flags |= LEASEFS_DAX_REC_RESTART;
      const uint64_t open_file = info == infos.end() ? 0 : info->second.open_file;
      o.open_file = open_file;
      if (open_file == 0 && info != infos.end() && !info->second.restart) {
        o.flags |= LEASEFS_DAX_REC_CLOSED;
      }
      const uint32_t state =
          open_file == 0 ? LEASEFS_STATE_NONE : leases_.table().GetLease(open_file, o.file_offset).state;
      if (state != LEASEFS_STATE_ACTIVE && state != LEASEFS_STATE_BREAKING) {
        o.flags |= LEASEFS_DAX_REC_UNLEASED;
      }
    }
  }
  fuse_reply_ioctl(req, 0, list.get(), sizeof(*list));
  return 0;
}

}  // namespace leasefs::daemon
