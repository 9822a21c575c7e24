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
#include <utility>
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

// MapForDax calls one pin may take, each for up to LEASEFS_DAX_MAX runs: a
// range in more than 64 × 128 pieces gives E2BIG.
constexpr size_t kMaxPinCalls = 64;

bool ZeroReserved(const __u64* r, size_t n) {
  return std::all_of(r, r + n, [](__u64 v) { return v == 0; });
}

}  // namespace

// The blocks of a pin as the daemon holds them: the quarantine records that
// keep them out of other files while the pin lives, and for the soft NIC the
// daemon's view of them. Destroying it lets both go (off the loop: it may
// wait for the engine's writer lock).
class Server::PinnedBlocks {
 public:
  explicit PinnedBlocks(Server* server) : server_(server) {}
  ~PinnedBlocks() {
    if (view != nullptr) {
      // The peers' stores went through this mapping: make them durable
      // before the blocks may be the next file's.
      msync(view, view_length, MS_SYNC);
      munmap(view, view_length);
    }
    for (const Records& r : records) {
      for (uint64_t id : r.map_ids) server_->dax_->DropPinned(r.owner, id);
    }
  }
  PinnedBlocks(const PinnedBlocks&) = delete;
  PinnedBlocks& operator=(const PinnedBlocks&) = delete;

  // One owner's records of the range: one map id per MapForDax call.
  struct Records {
    DaxMaps::Process owner;
    std::vector<uint64_t> map_ids;
  };
  std::vector<Records> records;
  std::vector<engine::Filesystem::DaxRun> runs;  // the range's blocks, in file order
  void* view = nullptr;  // the soft NIC's view of them (nullptr: none)
  uint64_t view_length = 0;

 private:
  Server* const server_;
};

// A PIN request once its fields are checked, as the worker needs it.
struct Server::PinArgs {
  explicit PinArgs(engine::Cred c) : cred(std::move(c)) {}
  engine::Cred cred;  // the caller's, through the open file
  pin::Provider provider = pin::Provider::kSoftNic;
  uint32_t flags = 0;  // LEASEFS_PIN_REMOTE_*
  uint64_t context = 0;
  pin::Token token{};
  uint64_t offset = 0;
  uint64_t length = 0;
  uint64_t file_id = 0;
  engine::Ino ino = 0;
  uid_t uid = 0;
  DaxMaps::Process caller;
};

Status Server::StartPins(const PinMountOptions& opts) {
  close_with_pins_ = opts.close_with_pins;
  // Under block-close our files get FLUSH; the daemon's own duplicates of
  // them must then be closed off the loop (PeerFiles), which answers it.
  if (peers_) peers_->SetOwnFilesFlush(opts.close_with_pins == PinMountOptions::Close::kBlockClose);
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
      if (opts.softnic_address.rfind("127.", 0) != 0) {
        std::fprintf(stderr,
                     "leasefs: the soft NIC listens on %s:%u, not loopback: peers elsewhere "
                     "may reach pinned blocks with an rkey\n",
                     opts.softnic_address.c_str(), static_cast<unsigned>(nic_->port()));
      }
    }
  }
  pins_ = std::make_unique<pin::PinTable>(&leases_.table(), nic_.get());
  contexts_ = std::make_unique<pin::ContextServer>(
      pins_.get(), opts.strict_passing ? pin::PinPassing::kStrict : pin::PinPassing::kFollowFd);
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

int Server::PinLeaseError(const OpenFile& file, uint64_t off, uint64_t len, pid_t caller,
                          bool* exclusive) {
  // What AddPin will demand, asked before the blocks are prepared, so that a
  // refused PIN changes nothing: active leases of this open file, taken by
  // the caller, of a kind that may count pins, over the whole range.
  *exclusive = false;
  for (uint64_t pos = off; pos < off + len;) {
    const lease::LeaseInfo l = leases_.table().GetLease(file.id(), pos);
    // A ZOMBIE lease's open file was closed or its taker died: it is
    // nobody's now, so not the caller's (scenarios 7 and 8), for good.
    if (l.state == LEASEFS_STATE_NONE || l.state == LEASEFS_STATE_ZOMBIE) return EPERM;
    if (l.state != LEASEFS_STATE_ACTIVE) return EAGAIN;
    const bool excl = (l.flags & LEASEFS_LEASE_EXCLUSIVE) != 0;
    const bool unbreakable_write =
        l.type == LEASEFS_LEASE_WRITE && (l.flags & LEASEFS_LEASE_UNBREAKABLE) != 0;
    if (!excl && !unbreakable_write) return EPERM;
    if (l.holder_pid != caller) return EPERM;  // a fork's parent's lease
    *exclusive = *exclusive || excl;
    if (l.length == 0) break;  // to the end of the file
    pos = l.offset + l.length;
  }
  return 0;
}

Status Server::RecordPinned(const PinArgs& a, const DaxMaps::Process& owner, PinnedBlocks* blocks) {
  PinnedBlocks::Records& rec = blocks->records.emplace_back();
  rec.owner = owner;
  const bool first = blocks->records.size() == 1;  // the one that prepares the blocks
  const uint64_t end = a.offset + a.length;
  for (uint64_t pos = a.offset; pos < end;) {
    if (rec.map_ids.size() == kMaxPinCalls) {
      return Status::Error(E2BIG, "the range is in too many pieces: defragment the file");
    }
    const uint64_t map_id = dax_->NextId();
    LFS_ASSIGN_OR_RETURN(size_t allowance, dax_->Allowance(a.uid, LEASEFS_DAX_MAX));
    auto got = fs_->MapForDax(a.cred, a.ino, pos, end - pos, /*writable=*/true, map_id,
                              owner.owner, allowance);
    // A writable map gives every block of the file blocks of its own, so a
    // hole is a broken rule, and an empty answer a file that shrank under
    // us (its holder's own change).
    const bool hole = got.ok() && std::any_of(got->runs.begin(), got->runs.end(),
                                              [](const auto& r) { return r.hole; });
    if (!got.ok() || got->covered == 0 || hole) {
      // Add never ran: the whole reservation goes back, and the records
      // MapForDax made (if any) go here.
      dax_->GiveBack(a.uid, allowance);
      if (got.ok()) (void)fs_->DropReach(map_id);
      if (!got.ok()) return got.status();
      return Status::Error(hole ? EIO : EINVAL, hole ? "a hole in a range prepared for writing"
                                                     : "past the end of the file");
    }
    if (!dax_->Add(owner, a.uid, map_id, a.file_id, got->runs.size(), allowance,
                   DaxMaps::Range{a.ino, pos, got->covered, true, /*pinned=*/true})) {
      return Status::Error(ENOMEM, "cannot watch the pin's records");  // they are gone
    }
    rec.map_ids.push_back(map_id);
    if (first) blocks->runs.insert(blocks->runs.end(), got->runs.begin(), got->runs.end());
    pos += got->covered;
  }
  return Status::Ok();
}

Status Server::MapPinnedView(uint64_t off, PinnedBlocks* blocks) {
  // The runs' pool blocks, in file order, at consecutive addresses of one
  // reservation, mapped from the pool file.
  const auto* pool = dynamic_cast<const engine::PoolMedia*>(&fs_->media());
  if (pool == nullptr) {
    return Status::Error(EOPNOTSUPP, "the pool is not a file the daemon can map again");
  }
  uint64_t len = 0;
  for (const auto& r : blocks->runs) len += r.length * kBlock;
  void* base = mmap(nullptr, len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (base == MAP_FAILED) return Status::FromErrno("cannot reserve the pin's view");
  blocks->view = base;
  blocks->view_length = len;
  for (const auto& r : blocks->runs) {
    char* at = static_cast<char*>(base) + (r.file_block * kBlock - off);
    if (mmap(at, r.length * kBlock, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, pool->fd(),
             static_cast<off_t>(r.pool_block * kBlock)) == MAP_FAILED) {
      return Status::FromErrno("cannot map the pin's blocks");
    }
  }
  return Status::Ok();
}

bool Server::StillPinnedBlocks(const PinArgs& a, const PinnedBlocks& blocks) {
  // Once the pin counts on its lease the range's layout is frozen (the
  // holder's own change gets EDEADLOCK, others' are refused, recalled or
  // fenced); before that, under WRITE|UNBREAKABLE, the holder could change
  // it between the preparing and the counting. Compare block by block.
  const uint64_t first = a.offset / kBlock, count = a.length / kBlock;
  auto now = fs_->BlockMap(a.ino, first, blocks.runs.size() + 1);
  if (!now.ok()) return false;
  std::vector<uint64_t> want, have;
  for (const auto& r : blocks.runs) {
    for (uint64_t i = 0; i < r.length; ++i) want.push_back(r.pool_block + i);
  }
  for (const auto& r : now->runs) {
    for (uint64_t b = std::max(r.file_block, first);
         b < std::min(r.file_block + r.length, first + count); ++b) {
      if ((r.flags & LEASEFS_EXTENT_UNWRITTEN) != 0 || r.refcount != 1) return false;
      if (b - first != have.size()) return false;  // a hole before it
      have.push_back(r.pool_block + (b - r.file_block));
    }
  }
  return want == have;
}

int Server::DoPin(fuse_req_t req, const OpenFile& file, const void* in, size_t in_size,
                  size_t out_size) {
  leasefs_pin p;
  if (!ReadArg(in, in_size, &p) || out_size < sizeof(p)) return EINVAL;
  if (!pins_) return ENOTTY;
  if (p.pin_id != 0 || p.rkey != 0 || !ZeroReserved(p.reserved, 4)) return EINVAL;
  const uint64_t off = p.offset, len = p.length;
  if (off % kBlock != 0 || len % kBlock != 0 || len == 0 || len > LEASEFS_PIN_MAX_BYTES ||
      off > kMaxOff - len) {
    return EINVAL;
  }
  constexpr uint32_t kRemote = LEASEFS_PIN_REMOTE_WRITE | LEASEFS_PIN_REMOTE_READ;
  auto a = std::make_shared<PinArgs>(CredWithGroups(req));
  if (p.provider == LEASEFS_PIN_SOFTNIC) {
    if ((p.flags & ~kRemote) != 0 || p.flags == 0) return EINVAL;
    if (!nic_) return EOPNOTSUPP;
    a->provider = pin::Provider::kSoftNic;
  } else if (p.provider == LEASEFS_PIN_DECLARED) {
    if (p.flags != 0) return EINVAL;
    a->provider = pin::Provider::kDeclared;
  } else if (p.provider == LEASEFS_PIN_VERBS) {
    // The flags are the MR's remote access, recorded for the listing.
    if ((p.flags & ~kRemote) != 0 || p.flags == 0) return EINVAL;
    a->provider = pin::Provider::kVerbs;
  } else {
    return EINVAL;
  }
  // A declared engine may write, as a peer with REMOTE_WRITE may: both need
  // what mmap(PROT_WRITE, MAP_SHARED) needs. So does a verbs MR whatever
  // its flags say: its device writes local RECVs and READ answers into it,
  // and the daemon cannot see the access the MR was given.
  if ((a->provider != pin::Provider::kSoftNic || (p.flags & LEASEFS_PIN_REMOTE_WRITE) != 0) &&
      !file.writable()) {
    return EBADF;
  }
  const fuse_ctx* ctx = fuse_req_ctx(req);
  auto caller = DaxMaps::Identify(ctx->pid);
  if (!caller.ok()) return ErrnoOf(caller.status());
  bool exclusive = false;  // the common mistakes answered at once
  if (int err = PinLeaseError(file, off, len, caller->owner.pid, &exclusive); err != 0) return err;
  {
    auto e = fs_->GetAttr(file.ino());
    if (!e.ok()) return ErrnoOf(e.status());
    const auto size = static_cast<uint64_t>(e->attr.st_size);
    if (off + len > (size + kBlock - 1) / kBlock * kBlock) return EINVAL;  // inside the file
  }
  a->flags = p.flags;
  a->context = p.context;
  std::memcpy(a->token.data(), p.token, a->token.size());
  a->offset = off;
  a->length = len;
  a->file_id = file.id();
  a->ino = file.ino();
  a->uid = ctx->uid;
  a->caller = *caller;
  a->cred.set_open_file(a->file_id);
  // Zeroing and copying blocks, and plain mappings' pages written back
  // first: off the loop, as DAX_MAP.
  DeferFlushing(req, [this, a](fuse_req_t r) { return PinOnWorker(r, *a); });
  return 0;
}

int Server::PinOnWorker(fuse_req_t req, const PinArgs& a) {
  std::shared_ptr<OpenFile> file = files_.Find(a.file_id);
  if (file == nullptr) return EBADF;  // released while we waited
  // Again, now that nothing of the loop's answer holds: a refused PIN must
  // change no layout.
  bool exclusive = false;
  if (int err = PinLeaseError(*file, a.offset, a.length, a.caller.owner.pid, &exclusive);
      err != 0) {
    return err;
  }
  if (DaxNeedsBlocks(a.ino, a.offset, a.length)) {
    // Filling holes or unsharing is the holder's own layout change, which
    // an EXCLUSIVE lease refuses its holder too (docs/pins.md, rule 3).
    if (exclusive) return EDEADLOCK;
  }
  if (SharedMappings()) DropCachedPages({{a.ino, a.offset, a.length}});
  // A soft NIC pin's blocks are written by the daemon alone, which fences
  // before any change frees them: its records are the daemon's and live as
  // long as the pin. A declared engine or a verbs device is the caller's:
  // its blocks get the daemon's records (the pin's life) and the caller's
  // too (they outlive a daemon crash while the caller lives).
  auto blocks = std::make_shared<PinnedBlocks>(this);
  Status s = RecordPinned(a, self_, blocks.get());
  if (s.ok() && a.provider != pin::Provider::kSoftNic) s = RecordPinned(a, a.caller, blocks.get());
  if (s.ok() && a.provider == pin::Provider::kSoftNic) s = MapPinnedView(a.offset, blocks.get());
  if (!s.ok()) {
    if (s.err() != ERESTART) return ErrnoOf(s);
    // The guard asks for a break only for a breakable lease of another open
    // file, which cannot coexist with the leases checked above: one came
    // and went meanwhile.
    (void)LeaseEdge::TakeRefused();
    return EAGAIN;
  }
  pin::PinTable::PinRequest pr;
  pr.context = a.context;
  pr.token = a.token;
  pr.open_file = a.file_id;
  pr.ino = a.ino;
  pr.uid = a.uid;
  pr.pid = a.caller.owner.pid;
  pr.offset = a.offset;
  pr.length = a.length;
  pr.provider = a.provider;
  pr.remote_write = (a.flags & LEASEFS_PIN_REMOTE_WRITE) != 0;
  pr.remote_read = (a.flags & LEASEFS_PIN_REMOTE_READ) != 0;
  pin::PinTable::Region region;
  region.base = blocks->view;
  region.length = a.length;
  region.release = [blocks]() mutable { blocks.reset(); };
  auto pinned = pins_->Pin(pr, std::move(region));  // releases the region on failure
  if (!pinned.ok()) return ErrnoOf(pinned.status());
  if (!StillPinnedBlocks(a, *blocks)) {
    (void)pins_->Unpin(a.context, a.token, a.uid, pinned->id);
    return EAGAIN;  // the holder changed the range meanwhile: ask again
  }
  // From here the pin's region is the only owner of the blocks: an UNPIN
  // that follows the reply at once must drop the records, not find this
  // worker still holding them on its way out.
  blocks.reset();
  leasefs_pin out{};
  out.context = a.context;
  std::memcpy(out.token, a.token.data(), sizeof(out.token));
  out.offset = a.offset;
  out.length = a.length;
  out.provider = static_cast<uint32_t>(a.provider);
  out.flags = a.flags;
  out.pin_id = pinned->id;
  out.rkey = pinned->rkey;
  // A caller that can no longer hear the answer cannot use the pin; its
  // context may live on in another process, so the pin goes now.
  if (fuse_reply_ioctl(req, 0, &out, sizeof(out)) != 0) {
    (void)pins_->Unpin(a.context, a.token, a.uid, pinned->id);
  }
  return 0;
}

int Server::DoUnpin(fuse_req_t req, const void* in, size_t in_size) {
  leasefs_unpin u;
  if (!ReadArg(in, in_size, &u)) return EINVAL;
  if (!pins_) return ENOTTY;
  if (!ZeroReserved(u.reserved, 3)) return EINVAL;
  pin::Token token;
  std::memcpy(token.data(), u.token, token.size());
  const uid_t uid = fuse_req_ctx(req)->uid;
  // Ending a pin fences its rkey (waiting for a copy in progress) and drops
  // its records (the engine's writer lock): off the loop.
  Defer(req, [this, context = u.context, token, uid, id = u.pin_id](fuse_req_t r) {
    if (Status s = pins_->Unpin(context, token, uid, id); !s.ok()) return ErrnoOf(s);
    fuse_reply_ioctl(r, 0, nullptr, 0);
    return 0;
  });
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
  list->contexts = pins_->Contexts(fuse_req_ctx(req)->uid);
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
    if (pin.remote_write) o.flags |= LEASEFS_PIN_REC_WRITE;
    if (pin.remote_read) o.flags |= LEASEFS_PIN_REC_READ;
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
