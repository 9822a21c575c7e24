// The pin table (pin_table.h; rules: docs/pins.md).
#include "pin/pin_table.h"

#include <sys/socket.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "leasefs/ioctl.h"
#include "pin/random.h"
#include "pin/softnic.h"

namespace leasefs::pin {
namespace {

// What the daemon says on a context's socket: the ABI's leasefs_pin_frame
// (include/leasefs/ioctl.h), HELLO first, then a FENCED for each pin of the
// context that a break fenced.
struct ContextFrame : leasefs_pin_frame {
  ContextFrame() : leasefs_pin_frame{} {
    magic = LEASEFS_PIN_FRAME_MAGIC;
    version = LEASEFS_PIN_FRAME_VERSION;
  }
};
static_assert(sizeof(ContextFrame) == 48);

// Never blocks: the socket is the daemon's, and a client that does not read
// loses notices, not the daemon's time.
void SendFrame(int fd, const ContextFrame& f) {
  if (fd < 0) return;
  (void)send(fd, &f, sizeof(f), MSG_DONTWAIT | MSG_NOSIGNAL);
}

bool SameToken(const Token& a, const Token& b) {
  // Every byte is compared, so the time taken says nothing about where the
  // first difference is.
  uint8_t diff = 0;
  for (size_t i = 0; i < a.size(); ++i) diff |= static_cast<uint8_t>(a[i] ^ b[i]);
  return diff == 0;
}

}  // namespace

PinTable::PinTable(lease::LeaseTable* leases, SoftNic* nic) : leases_(leases), nic_(nic) {
  leases_->SetPinFencer(this);
}

PinTable::~PinTable() {
  leases_->SetPinFencer(nullptr);
  std::vector<Dropped> dropped;
  {
    MutexLock l(&mu_);
    std::vector<PinId> ids;
    ids.reserve(pins_.size());
    for (const auto& [id, rec] : pins_) ids.push_back(id);
    dropped = Take(std::move(ids));
  }
  Finish(std::move(dropped));
}

// ---------------------------------------------------------------- contexts

Result<PinTable::NewContext> PinTable::AddContext(pid_t creator_pid, uid_t creator_uid,
                                                  UniqueFd notice_fd) {
  NewContext out;
  LFS_RETURN_IF_ERROR(RandomBytes(out.token.data(), out.token.size()));
  MutexLock l(&mu_);
  out.id = next_context_++;
  Context& c = contexts_[out.id];
  c.creator_pid = creator_pid;
  c.uid = creator_uid;
  c.token = out.token;
  c.notice_fd = std::move(notice_fd);
  ContextFrame hello;
  hello.type = LEASEFS_PIN_FRAME_HELLO;
  hello.id = out.id;
  std::memcpy(hello.token, out.token.data(), out.token.size());
  SendFrame(c.notice_fd.get(), hello);
  return out;
}

void PinTable::CloseContext(ContextId id) {
  std::vector<Dropped> dropped;
  {
    MutexLock l(&mu_);
    auto it = contexts_.find(id);
    if (it == contexts_.end()) return;
    dropped = Take(it->second.pins);
    contexts_.erase(id);
  }
  Finish(std::move(dropped));
}

Result<PinTable::Context*> PinTable::Authorize(ContextId id, const Token& token, uid_t uid) {
  auto it = contexts_.find(id);
  if (it == contexts_.end()) return Status::Error(EBADF, "no such pin context");
  Context& c = it->second;
  if (!SameToken(c.token, token)) return Status::Error(EPERM, "not this context's token");
  if (uid != 0 && uid != c.uid) return Status::Error(EPERM, "another user's pin context");
  return &c;
}

// ---------------------------------------------------------------- pins

Result<PinTable::Pinned> PinTable::Pin(const PinRequest& req, Region region) {
  // Whatever happens below, a region not kept is given back.
  struct ReleaseUnlessKept {
    Region* r;
    bool kept = false;
    ~ReleaseUnlessKept() {
      if (!kept && r->release) r->release();
    }
  } guard{&region};
  // The soft NIC copies into the memory; a declared engine reaches the
  // blocks its own way, and the table needs no memory for it.
  if (req.length == 0 || region.length != req.length ||
      (region.base == nullptr && req.provider == Provider::kSoftNic)) {
    return Status::Error(EINVAL, "a pin needs a range and its memory");
  }
  if (req.ino == 0) return Status::Error(EINVAL, "a pin needs its inode");
  if (req.provider != Provider::kSoftNic && req.provider != Provider::kDeclared &&
      req.provider != Provider::kVerbs) {
    return Status::Error(EINVAL, "unknown pin provider");
  }
  if (req.provider == Provider::kSoftNic && nic_ == nullptr) {
    return Status::Error(EOPNOTSUPP, "this mount has no soft NIC (-o softnic=off)");
  }
  MutexLock l(&mu_);
  LFS_ASSIGN_OR_RETURN(Context * c, Authorize(req.context, req.token, req.uid));
  // find, not []: a refused pin must not leave an entry for its user.
  if (auto n = per_uid_.find(c->uid); c->uid != 0 && n != per_uid_.end() &&
                                      n->second >= kMaxPinsPerUser) {
    return Status::Error(ENOLCK, "too many pins for this user");
  }
  // The lease check and the count are one step in the lease table; its
  // fencer (this table) cannot run FenceLease before the pin is listed,
  // since that needs mu_.
  LFS_ASSIGN_OR_RETURN(const lease::LeaseId lease,
                       leases_->AddPin(req.open_file, req.offset, req.length, req.pid, req.ino));
  uint64_t rkey = 0;
  if (req.provider == Provider::kSoftNic) {
    auto registered = nic_->Register(region.base, region.length, req.remote_write,
                                     req.remote_read);
    if (!registered.ok()) {
      leases_->DropPin(lease);
      return registered.status();
    }
    rkey = *registered;
  }
  const PinId id = next_pin_++;
  PinRecord& rec = pins_[id];
  rec.info.id = id;
  rec.info.context = req.context;
  rec.info.provider = req.provider;
  rec.info.remote_write = req.remote_write;
  rec.info.remote_read = req.remote_read;
  rec.info.open_file = req.open_file;
  rec.info.ino = req.ino;
  rec.info.offset = req.offset;
  rec.info.length = req.length;
  rec.info.lease = lease;
  rec.info.rkey = rkey;
  rec.info.creator_pid = c->creator_pid;
  rec.info.uid = c->uid;
  rec.region = std::move(region);
  guard.kept = true;
  c->pins.push_back(id);
  by_lease_.emplace(lease, id);
  ++per_open_file_[req.open_file];
  ++per_uid_[c->uid];
  return Pinned{id, rkey};
}

Status PinTable::Unpin(ContextId context, const Token& token, uid_t uid, PinId id) {
  std::vector<Dropped> dropped;
  {
    MutexLock l(&mu_);
    LFS_ASSIGN_OR_RETURN(Context * c, Authorize(context, token, uid));
    if (id != 0) {
      auto it = pins_.find(id);
      if (it == pins_.end() || it->second.info.context != context) {
        return Status::Error(ENOENT, "no such pin of this context");
      }
    }
    dropped = Take(id == 0 ? c->pins : std::vector<PinId>{id});
  }
  Finish(std::move(dropped));
  return Status::Ok();
}

std::vector<PinTable::Dropped> PinTable::Take(std::vector<PinId> ids) {
  std::vector<Dropped> out;
  out.reserve(ids.size());
  for (PinId id : ids) {
    auto it = pins_.find(id);
    if (it == pins_.end()) continue;
    const PinInfo p = it->second.info;
    out.push_back(Dropped{p.rkey, p.fenced ? 0 : p.lease, std::move(it->second.region)});
    pins_.erase(it);
    if (!p.fenced) {
      by_lease_.erase({p.lease, id});
      ++unsettled_[p.lease];
    }
    if (auto c = contexts_.find(p.context); c != contexts_.end()) {
      auto& v = c->second.pins;
      v.erase(std::remove(v.begin(), v.end(), id), v.end());
    }
    if (auto n = per_open_file_.find(p.open_file); n != per_open_file_.end() && --n->second == 0) {
      per_open_file_.erase(n);
    }
    if (auto n = per_uid_.find(p.uid); n != per_uid_.end() && --n->second == 0) per_uid_.erase(n);
  }
  return out;
}

void PinTable::Finish(std::vector<Dropped> dropped) {
  if (dropped.empty()) return;
  for (const Dropped& d : dropped) {
    // Forgetting the rkey fences it first: no copy is in progress
    // afterwards, so the lease may stop counting the pin (and a change wait
    // no more for it) and the memory may go.
    if (d.rkey != 0) (void)nic_->Unregister(d.rkey);
    if (d.lease != 0) leases_->DropPin(d.lease);
  }
  {
    MutexLock l(&mu_);
    for (const Dropped& d : dropped) {
      if (d.lease == 0) continue;
      if (auto n = unsettled_.find(d.lease); n != unsettled_.end() && --n->second == 0) {
        unsettled_.erase(n);
      }
    }
  }
  settled_.notify_all();
  for (Dropped& d : dropped) {
    if (d.region.release) d.region.release();
  }
  unpinned_.notify_all();
}

size_t PinTable::PinsOf(lease::OpenFileId f) const {
  MutexLock l(&mu_);
  auto it = per_open_file_.find(f);
  return it == per_open_file_.end() ? 0 : it->second;
}

bool PinTable::WaitUnpinned(lease::OpenFileId f, const std::function<bool()>& stop) const {
  MutexLock l(&mu_);
  std::unique_lock<std::mutex> lk(mu_.native(), std::adopt_lock);
  bool none = false;
  while (!(none = per_open_file_.count(f) == 0) && !stop()) unpinned_.wait(lk);
  lk.release();
  return none;
}

void PinTable::Wake() const {
  { MutexLock l(&mu_); }  // a waiter is either before its check or waiting
  unpinned_.notify_all();
}

bool PinTable::PinnedBy(lease::OpenFileId f, uid_t uid) const {
  MutexLock l(&mu_);
  for (const auto& [id, rec] : pins_) {
    if (rec.info.open_file == f && rec.info.uid == uid) return true;
  }
  return false;
}

std::vector<PinTable::ContextSocket> PinTable::ContextSocketsOf(lease::OpenFileId f) const {
  MutexLock l(&mu_);
  std::set<ContextId> ids;
  for (const auto& [id, rec] : pins_) {
    if (rec.info.open_file == f) ids.insert(rec.info.context);
  }
  std::vector<ContextSocket> out;
  for (ContextId id : ids) {
    auto c = contexts_.find(id);
    struct stat st {};
    if (c == contexts_.end() || fstat(c->second.notice_fd.get(), &st) != 0) continue;
    out.push_back(ContextSocket{st.st_ino, c->second.uid});
  }
  return out;
}

size_t PinTable::AbortPinsOf(lease::OpenFileId f) {
  std::vector<PinId> ids;
  {
    MutexLock l(&mu_);
    for (const auto& [id, rec] : pins_) {
      if (rec.info.open_file == f) ids.push_back(id);
    }
  }
  return Abort(ids);
}

size_t PinTable::AbortUnlessCovered(ContextId id, const std::vector<pid_t>& holders) {
  std::vector<PinInfo> pins;
  {
    MutexLock l(&mu_);
    auto c = contexts_.find(id);
    if (c == contexts_.end()) return 0;
    for (PinId p : c->second.pins) {
      if (auto rec = pins_.find(p); rec != pins_.end()) pins.push_back(rec->second.info);
    }
  }
  if (pins.empty()) return 0;
  // The holders' leases, read with no lock of this table held.
  std::vector<lease::LeaseInfo> theirs;
  bool more = true;
  for (lease::LeaseId after = 0; more;) {
    const std::vector<lease::LeaseInfo> page = leases_->List(after, 1024, &more);
    if (page.empty()) break;
    after = page.back().id;
    for (const auto& info : page) {
      const bool pinnable = (info.flags & LEASEFS_LEASE_EXCLUSIVE) != 0 ||
                            (info.type == LEASEFS_LEASE_WRITE &&
                             (info.flags & LEASEFS_LEASE_UNBREAKABLE) != 0);
      if (info.state == LEASEFS_STATE_ACTIVE && pinnable &&
          std::find(holders.begin(), holders.end(), info.holder_pid) != holders.end()) {
        theirs.push_back(info);
      }
    }
  }
  auto covered = [&theirs](const PinInfo& p) {
    return std::any_of(theirs.begin(), theirs.end(), [&p](const lease::LeaseInfo& l) {
      return l.ino == p.ino && l.offset <= p.offset &&
             (l.length == 0 || l.offset + l.length >= p.offset + p.length);
    });
  };
  std::vector<PinId> ids;
  bool keep = true;
  for (const PinInfo& p : pins) {
    ids.push_back(p.id);
    if (!p.fenced && !covered(p)) keep = false;
  }
  return keep ? 0 : Abort(ids);
}

size_t PinTable::Abort(const std::vector<PinId>& ids) {
  std::vector<PinId> drop;
  std::vector<lease::LeaseId> uncount;  // of declared and verbs pins fenced here
  std::vector<PinInfo> told;            // pins to tell their contexts of
  std::vector<Dropped> dropped;
  {
    MutexLock l(&mu_);
    for (PinId id : ids) {
      auto rec = pins_.find(id);
      if (rec == pins_.end()) continue;
      PinInfo& p = rec->second.info;
      if (!p.fenced) told.push_back(p);
      if (p.provider == Provider::kSoftNic) {
        drop.push_back(id);
        continue;
      }
      // A declared engine or the client's RDMA device cannot be stopped
      // from here: the blocks stay quarantined under the pin's records
      // until its context lets it go (a VERBS holder deregisters its MR on
      // the FENCED notice, then unpins), as after a fence; only its lease
      // stops counting it.
      if (!p.fenced) {
        p.fenced = true;
        by_lease_.erase({p.lease, id});
        uncount.push_back(p.lease);
      }
    }
    dropped = Take(drop);
  }
  for (lease::LeaseId lease : uncount) leases_->DropPin(lease);
  const size_t n = dropped.size() + uncount.size();
  Finish(std::move(dropped));
  // Told once done: a holder that reads FENCED finds the pin fenced at its
  // provider and no longer counted on its lease.
  MutexLock l(&mu_);
  for (const PinInfo& p : told) {
    if (auto c = contexts_.find(p.context); c != contexts_.end()) Notify(c->second, p);
  }
  return n;
}

size_t PinTable::FenceLease(lease::LeaseId lease) noexcept {
  MutexLock l(&mu_);
  // A pin another thread is dropping is out of the table but still counted
  // on the lease, and a peer may still be copying through its rkey: wait
  // until Finish has unregistered it and given its count back.
  std::unique_lock<std::mutex> lk(mu_.native(), std::adopt_lock);
  while (unsettled_.count(lease) != 0) settled_.wait(lk);
  lk.release();
  size_t fenced = 0;
  auto it = by_lease_.lower_bound({lease, 0});
  while (it != by_lease_.end() && it->first == lease) {
    auto rec = pins_.find(it->second);
    it = by_lease_.erase(it);  // fenced, the lease counts it no more
    if (rec == pins_.end()) continue;
    PinInfo& p = rec->second.info;
    // Returns once no copy into the blocks is in progress or can start.
    if (p.rkey != 0) (void)nic_->Fence(p.rkey);
    p.fenced = true;
    ++fenced;
    if (auto c = contexts_.find(p.context); c != contexts_.end()) Notify(c->second, p);
  }
  return fenced;
}

void PinTable::Notify(const Context& c, const PinInfo& fenced) {
  ContextFrame f;
  f.type = LEASEFS_PIN_FRAME_FENCED;
  f.id = fenced.id;
  f.rkey = fenced.rkey;
  SendFrame(c.notice_fd.get(), f);
}

size_t PinTable::TEST_CountedUsers() const {
  MutexLock l(&mu_);
  return per_uid_.size();
}

std::vector<PinTable::PinInfo> PinTable::List(uid_t viewer) const {
  MutexLock l(&mu_);
  std::vector<PinInfo> out;
  for (const auto& [id, rec] : pins_) {
    if (viewer != 0 && viewer != rec.info.uid) continue;
    out.push_back(rec.info);
  }
  return out;
}

size_t PinTable::Contexts(uid_t viewer) const {
  MutexLock l(&mu_);
  if (viewer == 0) return contexts_.size();
  return static_cast<size_t>(std::count_if(contexts_.begin(), contexts_.end(),
                                           [viewer](const auto& c) { return c.second.uid == viewer; }));
}

}  // namespace leasefs::pin
