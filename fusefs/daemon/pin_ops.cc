// The pin ioctls (include/leasefs/ioctl.h, "pins"; docs/pins.md): where
// the pin socket and the soft NIC are, registering a leased range, ending
// pins, and the list. The pin table (pin/pin_table.h) keeps the rules of
// contexts, leases and fencing; this file prepares the blocks, maps them
// into the daemon for the soft NIC, and keeps their quarantine records.
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>
#include <unordered_map>
#include <vector>

#include "engine/layout.h"
#include "fusefs/daemon/ioctl_args.h"
#include "fusefs/daemon/reply.h"
#include "fusefs/daemon/server.h"
#include "leasefs/ioctl.h"

namespace leasefs::daemon {

using ioctl_args::kBlock;
using ioctl_args::kMaxOff;
using ioctl_args::ReadArg;

namespace {

// MapForDax calls one pin may take (each covers up to LEASEFS_DAX_MAX runs):
// a range in more pieces than that gives E2BIG.
constexpr size_t kMaxPinCalls = 64;

bool ZeroReserved(const __u64* r, size_t n) {
  return std::all_of(r, r + n, [](__u64 v) { return v == 0; });
}

}  // namespace

// The blocks of a pin as the daemon sees them: its records and, for the soft
// NIC, the pool blocks mapped at consecutive addresses.
struct Server::PinView {
  void* base = nullptr;  // MAP_FAILED-free: nullptr when not mapped
  uint64_t length = 0;
  std::vector<uint64_t> map_ids;
};

Status Server::StartPins(const PinMountOptions& opts) {
  auto self = DaxMaps::Identify(getpid());
  if (!self.ok()) return self.status();
  self_ = *self;
  if (opts.softnic) {
    pin::SoftNicOptions so;
    so.bind_address = opts.softnic_address;
    so.port = opts.softnic_port;
    auto nic = std::make_unique<pin::SoftNic>(so);
    if (Status s = nic->Start(); !s.ok()) {
      if (opts.softnic_given) return s;
      std::fprintf(stderr, "leasefs: soft NIC off (%s): declared pins only\n",
                   s.ToString().c_str());
    } else {
      nic_ = std::move(nic);
      softnic_address_ = opts.softnic_address;
    }
  }
  pins_ = std::make_unique<pin::PinTable>(&leases_.table(), nic_.get());
  contexts_ = std::make_unique<pin::ContextServer>(pins_.get());
  if (Status s = contexts_->Start(); !s.ok()) {
    std::fprintf(stderr, "leasefs: no pin socket (%s): pins off\n", s.ToString().c_str());
    contexts_.reset();
    pins_.reset();
    nic_.reset();
  }
  return Status::Ok();
}

int Server::DoPinInfo(fuse_req_t req, size_t out_size) {
  if (out_size < sizeof(leasefs_pin_info)) return EINVAL;
  if (!contexts_) return ENOTTY;  // as a daemon without the command
  leasefs_pin_info info{};
  info.daemon_pid = getpid();
  const std::string name = contexts_->name();
  const size_t n = std::min(name.size(), sizeof(info.socket_name));
  std::memcpy(info.socket_name, name.data(), n);
  info.socket_name_len = static_cast<uint32_t>(n);
  if (nic_) {
    info.flags |= LEASEFS_PIN_INFO_SOFTNIC;
    info.softnic_port = nic_->port();
    std::snprintf(info.softnic_address, sizeof(info.softnic_address), "%s",
                  softnic_address_.c_str());
  }
  fuse_reply_ioctl(req, 0, &info, sizeof(info));
  return 0;
}

Result<Server::PinView> Server::MapPinned(const engine::Cred& c, engine::Ino ino, uint64_t off,
                                          uint64_t len, uint64_t file_id,
                                          const DaxMaps::Process& owner, uid_t uid) {
  PinView view;
  view.length = len;
  // Undoes what was done when a later step fails.
  auto undo = [this, &view, &owner] {
    if (view.base != nullptr) munmap(view.base, view.length);
    view.base = nullptr;
    for (uint64_t id : view.map_ids) (void)dax_->Unmap(owner, id);
    view.map_ids.clear();
  };
  std::vector<engine::Filesystem::DaxRun> runs;
  for (uint64_t pos = off; pos < off + len;) {
    if (view.map_ids.size() == kMaxPinCalls) {
      undo();
      return Status::Error(E2BIG, "the range is in too many pieces: defragment the file");
    }
    const uint64_t map_id = dax_->NextId();
    auto allowance = dax_->Allowance(uid, LEASEFS_DAX_MAX);
    if (!allowance.ok()) {
      undo();
      return allowance.status();
    }
    auto got = fs_->MapForDax(c, ino, pos, off + len - pos, /*writable=*/true, map_id, owner.owner,
                              *allowance);
    if (!got.ok() || got->covered == 0) {
      dax_->GiveBack(uid, *allowance);
      undo();
      // Nothing covered: the file shrank under us (its holder's own change).
      return got.ok() ? Status::Error(EINVAL, "past the end of the file") : got.status();
    }
    size_t records = 0;
    for (const auto& r : got->runs) {
      if (r.hole) {  // a writable mapping has none; a changed rule would be a bug
        dax_->GiveBack(uid, *allowance);
        (void)fs_->DropReach(map_id);
        undo();
        return Status::Error(EIO, "a hole in a range prepared for writing");
      }
      ++records;
      runs.push_back(r);
    }
    if (!dax_->Add(owner, uid, map_id, file_id, records, *allowance,
                   DaxMaps::Range{ino, pos, got->covered, true})) {
      undo();  // its records are gone already
      return Status::Error(ENOMEM, "cannot watch the pin's records");
    }
    view.map_ids.push_back(map_id);
    pos += got->covered;
  }
  // The soft NIC's view: the runs' pool blocks, in file order, at
  // consecutive addresses of one reservation, mapped from the pool file.
  const auto* pool = dynamic_cast<const engine::PoolMedia*>(&fs_->media());
  if (pool == nullptr) {
    undo();
    return Status::Error(EOPNOTSUPP, "the pool is not a file the daemon can map again");
  }
  void* base = mmap(nullptr, len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (base == MAP_FAILED) {
    const int err = errno;
    undo();
    return Status::Error(err, "cannot reserve the pin's view");
  }
  view.base = base;
  for (const auto& r : runs) {
    char* at = static_cast<char*>(base) + (r.file_block * kBlock - off);
    void* got = mmap(at, r.length * kBlock, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED,
                     pool->fd(), static_cast<off_t>(r.pool_block * kBlock));
    if (got == MAP_FAILED) {
      const int err = errno;
      undo();
      return Status::Error(err, "cannot map the pin's blocks");
    }
  }
  return view;
}

int Server::DoPin(fuse_req_t req, const OpenFile& file, const void* in, size_t in_size,
                  size_t out_size) {
  auto p = std::make_shared<leasefs_pin>();
  if (!ReadArg(in, in_size, p.get()) || out_size < sizeof(*p)) return EINVAL;
  if (!pins_) return ENOTTY;
  if (p->pin_id != 0 || p->rkey != 0 || !ZeroReserved(p->reserved, 4)) return EINVAL;
  const uint64_t off = p->offset, len = p->length;
  if (off % kBlock != 0 || len % kBlock != 0 || len == 0 || len > LEASEFS_PIN_MAX_BYTES ||
      off > kMaxOff - len) {
    return EINVAL;
  }
  constexpr uint32_t kRemote = LEASEFS_PIN_REMOTE_WRITE | LEASEFS_PIN_REMOTE_READ;
  pin::Provider provider;
  if (p->provider == LEASEFS_PIN_SOFTNIC) {
    if ((p->flags & ~kRemote) != 0 || p->flags == 0) return EINVAL;
    if (!nic_) return EOPNOTSUPP;
    provider = pin::Provider::kSoftNic;
  } else if (p->provider == LEASEFS_PIN_DECLARED) {
    if (p->flags != 0) return EINVAL;
    provider = pin::Provider::kDeclared;
  } else {
    return EINVAL;
  }
  // A declared engine may write, as a peer with REMOTE_WRITE may: both need
  // what mmap(PROT_WRITE, MAP_SHARED) needs.
  const bool may_write =
      provider == pin::Provider::kDeclared || (p->flags & LEASEFS_PIN_REMOTE_WRITE) != 0;
  if (may_write && !file.writable()) return EBADF;
  // The common mistakes answered at once; the pin table decides for good.
  bool all_write = false;
  if (int err = DaxLeaseCovers(file, off, len, &all_write); err != 0) return err;
  {
    auto e = fs_->GetAttr(file.ino());
    if (!e.ok()) return ErrnoOf(e.status());
    const auto size = static_cast<uint64_t>(e->attr.st_size);
    if (off + len > (size + kBlock - 1) / kBlock * kBlock) return EINVAL;  // inside the file
  }
  const fuse_ctx* ctx = fuse_req_ctx(req);
  auto caller = DaxMaps::Identify(ctx->pid);
  if (!caller.ok()) return ErrnoOf(caller.status());
  const uid_t uid = ctx->uid;
  const uint64_t file_id = file.id();
  const engine::Ino ino = file.ino();
  engine::Cred cred = CredWithGroups(req);
  cred.set_open_file(file_id);
  // A soft NIC pin's blocks are written by the daemon alone, which fences
  // before any change frees them: its records are the daemon's, and go with
  // the pin (or with the daemon). A declared engine is the caller's.
  const DaxMaps::Process owner = provider == pin::Provider::kSoftNic ? self_ : *caller;
  const pid_t caller_pid = caller->owner.pid;
  // Zeroing and copying blocks, and plain mappings' pages written back
  // first: off the loop, as DAX_MAP.
  DeferFlushing(req, [this, p, off, len, provider, owner, caller_pid, uid, file_id, ino,
                      cred = std::move(cred)](fuse_req_t r) {
    std::shared_ptr<OpenFile> f = files_.Find(file_id);
    if (f == nullptr) return EBADF;  // released while we waited
    if (SharedMappings()) DropCachedPages({{ino, off, len}});
    auto view = MapPinned(cred, ino, off, len, file_id, owner, uid);
    if (!view.ok()) {
      if (view.status().err() != ERESTART) return ErrnoOf(view.status());
      // Only a breakable lease of another open file makes the guard ask for
      // a break, and none can coexist with the leases a pin needs.
      (void)LeaseEdge::TakeRefused();
      return EAGAIN;
    }
    pin::PinTable::PinRequest pr;
    pr.context = p->context;
    std::memcpy(pr.token.data(), p->token, pr.token.size());
    pr.open_file = file_id;
    pr.ino = ino;
    pr.uid = uid;
    pr.pid = caller_pid;
    pr.offset = off;
    pr.length = len;
    pr.provider = provider;
    pr.remote_write = (p->flags & LEASEFS_PIN_REMOTE_WRITE) != 0;
    pr.remote_read = (p->flags & LEASEFS_PIN_REMOTE_READ) != 0;
    pin::PinTable::Region region;
    region.base = view->base;
    region.length = len;
    region.release = [this, owner, v = *view] {
      if (v.base != nullptr) munmap(v.base, v.length);
      for (uint64_t id : v.map_ids) (void)dax_->Unmap(owner, id);
    };
    auto pinned = pins_->Pin(pr, std::move(region));  // releases the region on failure
    if (!pinned.ok()) return ErrnoOf(pinned.status());
    leasefs_pin out = *p;
    out.pin_id = pinned->id;
    out.rkey = pinned->rkey;
    // A caller that can no longer hear the answer cannot use the pin; its
    // context may live on in another process, so the pin goes now.
    if (fuse_reply_ioctl(r, 0, &out, sizeof(out)) != 0) {
      (void)pins_->Unpin(pr.context, pr.token, uid, pinned->id);
    }
    return 0;
  });
  return 0;
}

int Server::DoUnpin(fuse_req_t req, const void* in, size_t in_size) {
  leasefs_unpin u;
  if (!ReadArg(in, in_size, &u)) return EINVAL;
  if (!pins_) return ENOTTY;
  if (!ZeroReserved(u.reserved, 3)) return EINVAL;
  pin::Token token;
  std::memcpy(token.data(), u.token, token.size());
  if (Status s = pins_->Unpin(u.context, token, fuse_req_ctx(req)->uid, u.pin_id); !s.ok()) {
    return ErrnoOf(s);
  }
  fuse_reply_ioctl(req, 0, nullptr, 0);
  return 0;
}

int Server::DoPinList(fuse_req_t req, const void* in, size_t in_size, size_t out_size) {
  auto list = std::make_unique<leasefs_pin_list>();
  if (!ReadArg(in, in_size, list.get()) || out_size < sizeof(*list)) return EINVAL;
  if (!pins_) return ENOTTY;
  if (list->count != 0 || list->flags != 0 || !ZeroReserved(list->reserved, 2)) return EINVAL;
  const uint64_t after = list->after;
  const std::vector<pin::PinTable::PinInfo> pins = pins_->List(fuse_req_ctx(req)->uid);
  pin::SoftNicStats stats;
  if (nic_) stats = nic_->Stats();
  std::unordered_map<uint64_t, const pin::RegionStats*> by_rkey;
  for (const auto& region : stats.regions) by_rkey[region.rkey] = &region;
  *list = leasefs_pin_list{};
  list->after = after;
  list->contexts = contexts_ ? contexts_->open_contexts() : 0;
  list->refused_bad_rkey = stats.refused_bad_rkey;
  list->refused_fenced = stats.refused_fenced;
  list->refused_other = stats.refused_out_of_bounds + stats.refused_permission;
  list->malformed_frames = stats.malformed_frames;
  for (const auto& pin : pins) {  // in id order
    if (pin.id <= after) continue;
    if (list->count == LEASEFS_PIN_LIST_MAX) {
      list->flags |= LEASEFS_LIST_MORE;
      break;
    }
    leasefs_pin_record& o = list->pins[list->count++];
    o.pin_id = pin.id;
    o.context = pin.context;
    o.ino = pin.ino;
    o.offset = pin.offset;
    o.length = pin.length;
    o.lease_id = pin.lease;
    o.open_file = pin.open_file;
    o.rkey = pin.rkey;
    o.creator_pid = pin.creator_pid;
    o.uid = pin.uid;
    o.provider = static_cast<uint32_t>(pin.provider);
    if (pin.fenced) o.flags |= LEASEFS_PIN_REC_FENCED;
    if (files_.Find(pin.open_file) == nullptr) o.flags |= LEASEFS_PIN_REC_CLOSED;
    if (pin.rkey != 0) {
      if (auto it = by_rkey.find(pin.rkey); it != by_rkey.end()) {
        const pin::RegionStats& rs = *it->second;
        o.ops = rs.writes + rs.reads;
        o.bytes = rs.bytes_written + rs.bytes_read;
        o.refused = rs.refused;
      }
    }
  }
  fuse_reply_ioctl(req, 0, list.get(), sizeof(*list));
  return 0;
}

}  // namespace leasefs::daemon
