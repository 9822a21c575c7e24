// The lease table. docs/leases.md gives the rules and their sources; this
// file follows its sections: validation, owners, acquiring, releasing,
// conflicts with layout changes, breaking, revocation, the table's thread.
#include "lease/lease_table.h"

#include <signal.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <system_error>
#include <condition_variable>
#include <deque>
#include <map>
#include <mutex>
#include <set>
#include <thread>
#include <unordered_map>
#include <unordered_set>

#include "base/thread_annotations.h"
#include "base/unique_fd.h"
#include "engine/filesystem.h"
#include "leasefs/ioctl.h"
#include "lease/event_log.h"
#include "lease/process.h"
#include "lease/range_index.h"

namespace leasefs::lease {

using engine::LayoutChange;
using engine::LayoutChangeKind;

// Events carry the kind of change as the ABI numbers it.
static_assert(static_cast<uint32_t>(LayoutChangeKind::kUnmap) == LEASEFS_CHANGE_UNMAP);
static_assert(static_cast<uint32_t>(LayoutChangeKind::kAllocatingWrite) ==
              LEASEFS_CHANGE_ALLOCATING_WRITE);
static_assert(static_cast<uint32_t>(LayoutChangeKind::kOverwrite) == LEASEFS_CHANGE_OVERWRITE);

// What a WaitToken and the table's waiters share: the table's mutex and the
// condition variable signalled on every change of the table.
struct TableSync {
  Mutex mu;
  // Lock: mu. Signalled whenever a lease changes state or goes, an event is
  // logged, a token is cancelled, or the table shuts down.
  std::condition_variable cv;
};

void WaitToken::Cancel() noexcept {
  cancelled_.store(true, std::memory_order_release);
  // Taking the mutex orders this with a waiter that checked the flag and is
  // about to wait: it either sees the flag or gets the notification.
  { MutexLock l(&sync_->mu); }
  sync_->cv.notify_all();
}

namespace {

constexpr uint64_t kToEnd = LayoutChange::kToEnd;
constexpr uint32_t kKnownFlags =
    LEASEFS_LEASE_EXCLUSIVE | LEASEFS_LEASE_UNBREAKABLE | LEASEFS_LEASE_NONBLOCK;
constexpr uint32_t kKeptFlags = LEASEFS_LEASE_EXCLUSIVE | LEASEFS_LEASE_UNBREAKABLE;
// Owners (processes) without leases kept, with their pidfds, so that a
// process taking and releasing leases in turn does not open one each time.
constexpr size_t kIdleOwnersKept = 256;

uint64_t MonotonicNs() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000u + static_cast<uint64_t>(ts.tv_nsec);
}

// The five kinds of lease the conflict rules tell apart.
enum class Kind { kRead, kReadUnbreakable, kWrite, kWriteUnbreakable, kExclusive };

Kind KindOf(uint32_t type, uint32_t flags) {
  if (flags & LEASEFS_LEASE_EXCLUSIVE) return Kind::kExclusive;
  const bool unbreakable = (flags & LEASEFS_LEASE_UNBREAKABLE) != 0;
  if (type == LEASEFS_LEASE_WRITE) return unbreakable ? Kind::kWriteUnbreakable : Kind::kWrite;
  return unbreakable ? Kind::kReadUnbreakable : Kind::kRead;
}

// Whether two leases of different open files may cover the same byte.
bool Coexist(Kind a, Kind b) {
  auto alone = [](Kind k) { return k == Kind::kExclusive || k == Kind::kWriteUnbreakable; };
  if (alone(a) || alone(b)) return false;
  return !(a == Kind::kWrite && b == Kind::kWrite);
}

// Leases of these kinds go in the "shared" index; the others never overlap
// each other (each conflicts with every other of them).
bool IsShared(Kind k) { return k == Kind::kRead || k == Kind::kReadUnbreakable; }

uint64_t EndOf(uint64_t offset, uint64_t length) { return length == 0 ? kToEnd : offset + length; }

// Whether a lease over [offset, end) is touched by `c` (its kind aside): the
// ranges overlap, or the size changes and the lease reaches the smaller size.
bool Reaches(uint64_t offset, uint64_t end, const LayoutChange& c) {
  if (offset < c.end() && c.offset < end && c.offset < c.end()) return true;
  return c.size_changes && end >= std::min(c.old_size, c.new_size);
}

// The bytes whose leases Reaches() may say yes for: [lo, hi).
std::pair<uint64_t, uint64_t> QueryRange(const LayoutChange& c) {
  if (!c.size_changes) return {c.offset, c.end()};
  const uint64_t m = std::min(c.old_size, c.new_size);
  return {std::min(c.offset, m > 0 ? m - 1 : 0), kToEnd};
}

struct Owner {
  Owner(uint64_t s, pid_t t, uid_t u, UniqueFd fd)
      : serial(s), tgid(t), uid(u), pidfd(std::move(fd)) {}
  const uint64_t serial;  // the table's epoll key for it
  const pid_t tgid;
  const uid_t uid;  // of the request that first made it an owner
  const UniqueFd pidfd;
  // Guarded by the table's mutex.
  std::unordered_set<LeaseId> leases;
  bool dead = false;
};

struct Lease;
using LeaseMap = std::map<LeaseId, std::unique_ptr<Lease>>;

struct Lease {
  LeaseId id = 0;
  engine::Ino ino = 0;
  uint64_t offset = 0;
  uint64_t length = 0;  // 0: to the end
  uint32_t type = 0;
  uint32_t flags = 0;  // kKeptFlags only
  uint32_t state = LEASEFS_STATE_ACTIVE;
  OpenFileId open_file = 0;
  uid_t uid = 0;
  std::shared_ptr<Owner> owner;  // null when the holder's thread was unknown
  int signal = 0;
  uint64_t sigval = 0;
  bool ever_broken = false;
  uint64_t breaking_since = 0;
  uint64_t deadline = 0;
  // Pins (docs/pins.md): how many are counted on it; whether it outlived its
  // open file or process because of them (ZOMBIE); whether its break time
  // ran out while they remained under PinnedBreak::kWait (it is revoked
  // with the last one); whether the thread is fencing them.
  uint32_t pins = 0;
  bool zombie = false;
  bool overdue = false;
  bool fencing = false;
  // Where it sits in the table's maps, so that releasing costs no lookups.
  LeaseMap::iterator self;
  RangeIndex<Lease>::Pos index_pos;  // while live

  uint64_t end() const { return EndOf(offset, length); }
  Kind kind() const { return KindOf(type, flags); }
  bool live() const { return state != LEASEFS_STATE_REVOKED; }
  pid_t holder_pid() const { return owner ? owner->tgid : 0; }
  // Whether this kind of lease may count pins: one that refuses every
  // change by others.
  bool pinnable() const { return kind() == Kind::kExclusive || kind() == Kind::kWriteUnbreakable; }
};

// A Break waiting on a file: new leases it reaches wait until it is over.
struct PendingBreak {
  LayoutChange change;
};

struct InodeLeases {
  RangeIndex<Lease> shared;     // READ, READ|UNBREAKABLE (not EXCLUSIVE)
  RangeIndex<Lease> exclusive;  // the rest: pairwise disjoint
  std::vector<const PendingBreak*> breaks;
  size_t breaking = 0;  // leases in state BREAKING

  RangeIndex<Lease>& IndexFor(const Lease& l) { return IsShared(l.kind()) ? shared : exclusive; }
  bool unused() const { return shared.empty() && exclusive.empty() && breaks.empty(); }
  template <typename Fn>
  bool ForEachOverlap(uint64_t lo, uint64_t hi, Fn&& fn) const {
    return shared.ForEachOverlap(lo, hi, fn) && exclusive.ForEachOverlap(lo, hi, fn);
  }
};

struct OpenFile {
  std::map<uint64_t, Lease*> by_offset;  // its leases, revoked ones too: disjoint
  size_t alerting = 0;                   // of them BREAKING or REVOKED
};

// What the breaker must tell a holder, after letting go of the mutex.
struct Notice {
  OpenFileId open_file;
  std::shared_ptr<Owner> owner;
  int signal;
  uint64_t sigval;
  uid_t taker;  // the uid that took the lease, and asked for the signal
};

// What a change's conflicting leases ask of the breaker.
struct Verdict {
  int refuse = 0;  // ETXTBSY or EDEADLOCK: nothing may be marked
  Lease* refused_by = nullptr;
  std::vector<Lease*> others;  // breakable leases of other open files
  std::vector<Lease*> own;     // breakable READ leases of the breaker's open file
  // ZOMBIE leases with pins, nobody to recall: under PinnedBreak::kFence
  // fenced at once, under kWait waited for until their pins go.
  std::vector<Lease*> zombies;
};

}  // namespace

class LeaseTable::Impl {
 public:
  Impl(const Options& options, BreakNotifier* notifier);
  ~Impl();

  std::shared_ptr<TableSync> sync() const { return sync_; }

  Result<LeaseId> SetLease(const Holder& h, const LeaseRequest& req, WaitToken* wait)
      EXCLUDES(mu_);
  LeaseInfo GetLease(OpenFileId open_file, uint64_t offset) EXCLUDES(mu_);
  std::vector<LeaseInfo> List(LeaseId after, size_t max, bool* more) EXCLUDES(mu_);
  bool AnyLeases(engine::Ino ino) EXCLUDES(mu_);
  bool Pollpri(OpenFileId open_file) EXCLUDES(mu_);
  Status Break(const engine::Cred& by, const LayoutChange& change, bool nonblock,
               WaitToken* wait) EXCLUDES(mu_);
  void CloseOpenFile(OpenFileId open_file) EXCLUDES(mu_);
  Result<std::vector<Event>> Events(uint64_t after, size_t max, std::chrono::milliseconds timeout,
                                    WaitToken* wait, uint64_t* lost) EXCLUDES(mu_);
  Status MayChange(const engine::Cred& by, const LayoutChange& change) EXCLUDES(mu_);
  void Shutdown() EXCLUDES(mu_);
  void SetPinFencer(PinFencer* fencer) EXCLUDES(mu_);
  Result<LeaseId> AddPin(OpenFileId open_file, uint64_t offset, uint64_t length, pid_t tgid,
                         engine::Ino ino) EXCLUDES(mu_);
  void DropPin(LeaseId lease) EXCLUDES(mu_);

 private:
  // --- owners
  Result<std::shared_ptr<Owner>> OwnerOf(pid_t tid, uid_t uid) EXCLUDES(mu_);
  // Whether `uid` may have one more owner process (max_processes_per_uid),
  // after dropping its idle ones if need be.
  bool RoomForOwner(uid_t uid) REQUIRES(mu_);
  std::shared_ptr<Owner> KnownOwner(pid_t tgid) EXCLUDES(mu_);
  std::shared_ptr<Owner> AddOwner(std::shared_ptr<Owner> fresh) REQUIRES(mu_);
  void OwnerDied(uint64_t serial) REQUIRES(mu_);
  void DropOwner(const std::shared_ptr<Owner>& owner) REQUIRES(mu_);
  void TrimIdleOwners() REQUIRES(mu_);

  // --- acquiring
  Status CheckOwnState(const Holder& h, const LeaseRequest& req) REQUIRES(mu_);
  bool BreakInProgress(engine::Ino ino, uint64_t offset, uint64_t end, LeaseId skip)
      REQUIRES(mu_);
  bool AcquireConflicts(engine::Ino ino, Kind kind, uint64_t offset, uint64_t end, LeaseId skip)
      REQUIRES(mu_);
  LeaseId Grant(const Holder& h, const LeaseRequest& req, std::shared_ptr<Owner> owner)
      REQUIRES(mu_);
  LeaseId Convert(const Holder& h, const LeaseRequest& req) REQUIRES(mu_);
  Result<LeaseId> Unlock(const Holder& h, const LeaseRequest& req) EXCLUDES(mu_);

  // --- state changes of one lease
  void Release(Lease* l, uint32_t why, pid_t actor) REQUIRES(mu_);
  void Unindex(Lease* l) REQUIRES(mu_);
  void MarkBreaking(Lease* l, uint64_t now, const LayoutChange& c, pid_t actor,
                    std::vector<Notice>* notices) REQUIRES(mu_);
  void Revoke(Lease* l) REQUIRES(mu_);
  void RevokeExpired(uint64_t now, std::vector<LeaseId>* to_fence) REQUIRES(mu_);
  // A lease that counts pins outlives its open file or process (ZOMBIE).
  void Orphan(Lease* l, uint32_t why, pid_t actor) REQUIRES(mu_);
  // Fences the pins of `ids` (PinFencer, unlocked), then revokes them, or
  // releases them if ZOMBIE.
  void FenceAndRevoke(const std::vector<LeaseId>& ids) EXCLUDES(mu_);

  // --- breaking
  Verdict Classify(const engine::Cred& by, const LayoutChange& c) REQUIRES(mu_);
  Status Refuse(const Verdict& v, const engine::Cred& by, const LayoutChange& c) REQUIRES(mu_);
  Status WaitGone(const std::vector<LeaseId>& ids, WaitToken* wait) REQUIRES(mu_);
  void Send(const std::vector<Notice>& notices) EXCLUDES(mu_);
  void BreakDone(const engine::Cred& by, const LayoutChange& c, int err) REQUIRES(mu_);

  // --- helpers
  Status Wait(WaitToken* wait, uint64_t deadline_ns) REQUIRES(mu_);
  void Log(uint32_t type, const Lease& l, uint32_t why, pid_t actor, int err) REQUIRES(mu_);
  LeaseInfo InfoOf(const Lease& l) const;
  void Wake() const;
  void ThreadLoop() EXCLUDES(mu_);
  int ThreadTimeoutMs() REQUIRES(mu_);

  const Options options_;
  BreakNotifier* const notifier_;
  const std::shared_ptr<TableSync> sync_;
  Mutex& mu_;
  PinFencer* fencer_ GUARDED_BY(mu_) = nullptr;
  size_t fencer_calls_ GUARDED_BY(mu_) = 0;  // FenceAndRevoke calls using fencer_

  // Live (active or breaking) leases: the fast path's count.
  std::atomic<size_t> live_{0};
  LeaseMap leases_ GUARDED_BY(mu_);
  std::unordered_map<engine::Ino, InodeLeases> inodes_ GUARDED_BY(mu_);
  std::unordered_map<OpenFileId, OpenFile> open_files_ GUARDED_BY(mu_);
  std::unordered_map<uid_t, size_t> per_uid_ GUARDED_BY(mu_);
  std::unordered_map<pid_t, std::shared_ptr<Owner>> owners_ GUARDED_BY(mu_);  // by tgid
  std::unordered_map<uint64_t, std::shared_ptr<Owner>> owner_serials_ GUARDED_BY(mu_);
  std::unordered_map<uid_t, size_t> owners_per_uid_ GUARDED_BY(mu_);  // in owner_serials_
  std::deque<uint64_t> idle_owners_ GUARDED_BY(mu_);  // may name busy or gone ones
  std::atomic<uint64_t> next_serial_{1};
  std::set<std::pair<uint64_t, LeaseId>> deadlines_ GUARDED_BY(mu_);  // breaking leases
  EventLog log_ GUARDED_BY(mu_){LEASEFS_EVENTS_KEPT};
  LeaseId next_id_ GUARDED_BY(mu_) = 1;
  bool stopping_ GUARDED_BY(mu_) = false;
  bool thread_stop_ GUARDED_BY(mu_) = false;

  // The thread: owners' pidfds (key: serial) and wake_ (key 0) in epoll_.
  UniqueFd epoll_;
  UniqueFd wake_;
  std::thread thread_;
};

// ---------------------------------------------------------------- lifetime

LeaseTable::Impl::Impl(const Options& options, BreakNotifier* notifier)
    : options_(options),
      notifier_(notifier),
      sync_(std::make_shared<TableSync>()),
      mu_(sync_->mu),
      epoll_(epoll_create1(EPOLL_CLOEXEC)),
      wake_(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = 0;
  // Without these the table still works, but owners' deaths and deadlines
  // without a waiting breaker go unnoticed; a daemon without two fds left
  // is in worse trouble, so this is a hard error.
  if (!epoll_.valid() || !wake_.valid() ||
      epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, wake_.get(), &ev) != 0) {
    throw std::system_error(errno, std::generic_category(), "lease table: epoll");
  }
  thread_ = std::thread([this] { ThreadLoop(); });
}

LeaseTable::Impl::~Impl() {
  Shutdown();
  {
    MutexLock l(&mu_);
    thread_stop_ = true;
  }
  Wake();
  thread_.join();
}

void LeaseTable::Impl::Shutdown() {
  {
    MutexLock l(&mu_);
    stopping_ = true;
  }
  sync_->cv.notify_all();
}

void LeaseTable::Impl::Wake() const {
  const uint64_t one = 1;
  // A full counter already wakes the thread; nothing else can fail here.
  [[maybe_unused]] ssize_t n = ::write(wake_.get(), &one, sizeof(one));
}

// Waits for the next change of the table, or until `deadline_ns`
// (CLOCK_MONOTONIC; 0: none). The condition variable needs the std::mutex
// inside mu_; the lock is adopted and handed back, so mu_ stays held as far
// as the annotations (and the caller) can tell.
Status LeaseTable::Impl::Wait(WaitToken* wait, uint64_t deadline_ns) {
  for (int pass = 0;; ++pass) {
    if (stopping_) return Status::Error(ESHUTDOWN, "lease table shut down");
    if (wait != nullptr && wait->cancelled()) return Status::Error(EINTR, "interrupted");
    if (pass == 1) return Status::Ok();
    std::unique_lock<std::mutex> lk(mu_.native(), std::adopt_lock);
    if (deadline_ns == 0) {
      sync_->cv.wait(lk);
    } else {
      const std::chrono::steady_clock::time_point until{std::chrono::nanoseconds(deadline_ns)};
      sync_->cv.wait_until(lk, until);
    }
    lk.release();
  }
}

// ---------------------------------------------------------------- owners

std::shared_ptr<Owner> LeaseTable::Impl::KnownOwner(pid_t tgid) {
  std::shared_ptr<Owner> known;
  {
    MutexLock l(&mu_);
    auto it = owners_.find(tgid);
    if (it != owners_.end() && !it->second->dead) known = it->second;
  }
  // A process that died and whose pid went to a new one would lend the new
  // one its owner, and its death, once handled, would take the new leases.
  // No check here: the thread handles a death within milliseconds, and a pid
  // comes round again only after the kernel has handed out the others
  // (pid_max: 32768 on small machines, 4 million on large ones); a poll of
  // the pidfd would double the cost of an acquire. AddOwner, the slow path,
  // does check.
  return known;
}

// The owner of leases taken by thread `tid`: its process. Known owners are
// found by pid first, which is right when tid is a live process's leader
// (a live task's pid is unique); otherwise /proc says which process.
Result<std::shared_ptr<Owner>> LeaseTable::Impl::OwnerOf(pid_t tid, uid_t uid) {
  if (auto known = KnownOwner(tid)) return known;
  LFS_ASSIGN_OR_RETURN(const pid_t tgid, ThreadGroupOf(tid));
  if (tgid != tid) {
    if (auto known = KnownOwner(tgid)) return known;
  }
  {
    MutexLock l(&mu_);
    if (!RoomForOwner(uid)) {
      return Status::Error(ENOLCK, "too many processes of this uid hold leases");
    }
  }
  LFS_ASSIGN_OR_RETURN(UniqueFd pidfd, OpenPidfd(tgid));
  auto fresh = std::make_shared<Owner>(next_serial_.fetch_add(1), tgid, uid, std::move(pidfd));
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = fresh->serial;
  if (epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, fresh->pidfd.get(), &ev) != 0) {
    return Status::FromErrno("epoll_ctl");
  }
  MutexLock l(&mu_);
  return AddOwner(std::move(fresh));
}

// Registers `fresh` unless another thread of its process got there first.
std::shared_ptr<Owner> LeaseTable::Impl::AddOwner(std::shared_ptr<Owner> fresh) {
  auto it = owners_.find(fresh->tgid);
  if (it != owners_.end()) {
    if (!it->second->dead && !PidfdExited(it->second->pidfd.get())) return it->second;
    // An earlier process with this pid, dead, its death not yet handled.
    OwnerDied(it->second->serial);
  }
  owners_[fresh->tgid] = fresh;
  owner_serials_[fresh->serial] = fresh;
  ++owners_per_uid_[fresh->uid];
  idle_owners_.push_back(fresh->serial);
  TrimIdleOwners();
  return fresh;
}

// The process behind owner `serial` died: every lease it took goes.
void LeaseTable::Impl::OwnerDied(uint64_t serial) {
  auto it = owner_serials_.find(serial);
  if (it == owner_serials_.end()) return;
  std::shared_ptr<Owner> owner = it->second;
  owner->dead = true;
  const std::vector<LeaseId> ids(owner->leases.begin(), owner->leases.end());
  for (LeaseId id : ids) {
    auto l = leases_.find(id);
    if (l == leases_.end()) continue;
    if (l->second->pins > 0) {
      // It outlives its process, which no longer names it: the pid may come
      // round again for another process.
      Orphan(l->second.get(), LEASEFS_WHY_EXIT, owner->tgid);
      owner->leases.erase(id);
      l->second->owner.reset();
    } else {
      Release(l->second.get(), LEASEFS_WHY_EXIT, owner->tgid);
    }
  }
  DropOwner(owner);
}

void LeaseTable::Impl::DropOwner(const std::shared_ptr<Owner>& ref) {
  const std::shared_ptr<Owner> owner = ref;  // `ref` may be an element erased here
  owner->dead = true;
  auto it = owners_.find(owner->tgid);
  if (it != owners_.end() && it->second == owner) owners_.erase(it);
  // Out of epoll now, not when the last reference closes the pidfd: a zombie
  // lease may keep the owner, and a dead process's pidfd stays readable.
  (void)epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, owner->pidfd.get(), nullptr);
  if (owner_serials_.erase(owner->serial) != 0) {
    auto n = owners_per_uid_.find(owner->uid);
    if (n != owners_per_uid_.end() && --n->second == 0) owners_per_uid_.erase(n);
  }
}

bool LeaseTable::Impl::RoomForOwner(uid_t uid) {
  if (uid == 0) return true;
  auto n = owners_per_uid_.find(uid);
  if (n == owners_per_uid_.end() || n->second < options_.max_processes_per_uid) return true;
  // Drop this uid's owners that hold no lease and that no call is using
  // (only the two maps hold them).
  std::vector<std::shared_ptr<Owner>> idle;
  for (const auto& [serial, owner] : owner_serials_) {
    if (owner->uid == uid && owner->leases.empty() && owner.use_count() == 2) idle.push_back(owner);
  }
  for (const auto& owner : idle) DropOwner(owner);
  n = owners_per_uid_.find(uid);
  return n == owners_per_uid_.end() || n->second < options_.max_processes_per_uid;
}

// Drops owners nobody uses (no lease, no call in progress: only the two maps
// hold them) once more than kIdleOwnersKept are known.
void LeaseTable::Impl::TrimIdleOwners() {
  for (size_t n = idle_owners_.size(); n > 0 && owner_serials_.size() > kIdleOwnersKept; --n) {
    const uint64_t serial = idle_owners_.front();
    idle_owners_.pop_front();
    auto it = owner_serials_.find(serial);
    if (it == owner_serials_.end() || !it->second->leases.empty()) continue;
    if (it->second.use_count() == 2) {
      DropOwner(it->second);
    } else {
      idle_owners_.push_back(serial);  // a call is about to give it a lease
    }
  }
}

// ---------------------------------------------------------------- acquiring

namespace {

Status Validate(const Holder& h, const LeaseRequest& req) {
  if (h.open_file == 0) return Status::Error(EINVAL, "no open file");
  if (req.type != LEASEFS_LEASE_UNLOCK && req.type != LEASEFS_LEASE_READ &&
      req.type != LEASEFS_LEASE_WRITE) {
    return Status::Error(EINVAL, "unknown lease type");
  }
  if ((req.flags & ~kKnownFlags) != 0) return Status::Error(EINVAL, "unknown lease flags");
  if (req.type == LEASEFS_LEASE_UNLOCK && ((req.flags & kKeptFlags) != 0 || req.convert != 0)) {
    return Status::Error(EINVAL, "UNLOCK takes no type flags and no id");
  }
  if (req.signal < 0 || req.signal > SIGRTMAX) return Status::Error(EINVAL, "bad signal");
  uint64_t end = 0;
  if (req.length != 0 && __builtin_add_overflow(req.offset, req.length, &end)) {
    return Status::Error(EINVAL, "offset + length overflows");
  }
  if (req.type != LEASEFS_LEASE_UNLOCK && (req.flags & kKeptFlags) != 0 && !h.may_unbreak) {
    return Status::Error(EACCES, "EXCLUSIVE and UNBREAKABLE need the file's owner or CAP_LEASE");
  }
  return Status::Ok();
}

}  // namespace

Result<LeaseId> LeaseTable::Impl::SetLease(const Holder& h, const LeaseRequest& req,
                                           WaitToken* wait) {
  LFS_RETURN_IF_ERROR(Validate(h, req));
  if (req.type == LEASEFS_LEASE_UNLOCK) return Unlock(h, req);
  std::shared_ptr<Owner> owner;
  if (h.tid != 0 && req.convert == 0) {
    LFS_ASSIGN_OR_RETURN(owner, OwnerOf(h.tid, h.uid));
  }
  const uint64_t end = EndOf(req.offset, req.length);
  MutexLock l(&mu_);
  for (;;) {
    if (stopping_) return Status::Error(ESHUTDOWN, "lease table shut down");
    LFS_RETURN_IF_ERROR(CheckOwnState(h, req));
    if (!BreakInProgress(h.ino, req.offset, end, req.convert)) break;
    if (req.flags & LEASEFS_LEASE_NONBLOCK) {
      return Status::Error(EWOULDBLOCK, "a break is in progress on the range");
    }
    LFS_RETURN_IF_ERROR(Wait(wait, 0));
  }
  const Kind kind = KindOf(req.type, req.flags);
  if (AcquireConflicts(h.ino, kind, req.offset, end, req.convert)) {
    return Status::Error(EAGAIN, "a lease of another open file conflicts");
  }
  if (owner && owner->dead) return Status::Error(ESRCH, "the holder's process died");
  return req.convert != 0 ? Convert(h, req) : Grant(h, req, std::move(owner));
}

// The checks that concern the holder's own leases: EEXIST, the conversion's
// EAGAIN and EINVAL, ENOLCK. Repeated after every wait.
Status LeaseTable::Impl::CheckOwnState(const Holder& h, const LeaseRequest& req) {
  if (req.convert != 0) {
    auto it = leases_.find(req.convert);
    if (it == leases_.end() || it->second->open_file != h.open_file) {
      return Status::Error(EAGAIN, "no such lease of this open file");
    }
    const Lease& l = *it->second;
    if (l.offset != req.offset || l.length != req.length) {
      return Status::Error(EINVAL, "a conversion keeps the lease's range");
    }
    if (l.state != LEASEFS_STATE_ACTIVE || l.ever_broken) {
      return Status::Error(EAGAIN, "the lease was broken since it was granted");
    }
    const Kind to = KindOf(req.type, req.flags);
    if (l.pins > 0 && to != Kind::kExclusive && to != Kind::kWriteUnbreakable) {
      return Status::Error(EBUSY, "the lease counts pins: unpin first");
    }
    return Status::Ok();
  }
  auto of = open_files_.find(h.open_file);
  if (of != open_files_.end()) {
    auto& by_offset = of->second.by_offset;
    auto it = by_offset.lower_bound(EndOf(req.offset, req.length));
    // Disjoint ranges: only the last one starting before our end can reach us.
    if (it != by_offset.begin() && std::prev(it)->second->end() > req.offset) {
      return Status::Error(EEXIST, "overlaps a lease of this open file");
    }
  }
  auto u = per_uid_.find(h.uid);
  if (h.uid != 0 && u != per_uid_.end() && u->second >= options_.max_leases_per_uid) {
    return Status::Error(ENOLCK, "too many leases for this uid");
  }
  return Status::Ok();
}

// Whether a break is in progress over [offset, end) of `ino`: a lease there
// is breaking, or a breaker waits for a change that reaches it.
bool LeaseTable::Impl::BreakInProgress(engine::Ino ino, uint64_t offset, uint64_t end,
                                       LeaseId skip) {
  auto it = inodes_.find(ino);
  if (it == inodes_.end()) return false;
  const InodeLeases& in = it->second;
  for (const PendingBreak* b : in.breaks) {
    if (Reaches(offset, end, b->change)) return true;
  }
  if (in.breaking == 0) return false;
  return !in.ForEachOverlap(offset, end, [&](const Lease* l) {
    return l->id == skip || l->state != LEASEFS_STATE_BREAKING;
  });
}

bool LeaseTable::Impl::AcquireConflicts(engine::Ino ino, Kind kind, uint64_t offset, uint64_t end,
                                        LeaseId skip) {
  auto it = inodes_.find(ino);
  if (it == inodes_.end()) return false;
  auto coexists = [&](const Lease* l) { return l->id == skip || Coexist(kind, l->kind()); };
  // The shared index holds only READs, with which only the lone kinds clash.
  if (!it->second.exclusive.ForEachOverlap(offset, end, coexists)) return true;
  if (kind != Kind::kExclusive && kind != Kind::kWriteUnbreakable) return false;
  return !it->second.shared.ForEachOverlap(offset, end, coexists);
}

LeaseId LeaseTable::Impl::Grant(const Holder& h, const LeaseRequest& req,
                                std::shared_ptr<Owner> owner) {
  auto owned = std::make_unique<Lease>();
  Lease* l = owned.get();
  l->id = next_id_++;
  l->ino = h.ino;
  l->offset = req.offset;
  l->length = req.length;
  l->type = req.type;
  l->flags = req.flags & kKeptFlags;
  l->open_file = h.open_file;
  l->uid = h.uid;
  l->owner = std::move(owner);
  l->signal = req.signal;
  l->sigval = req.sigval;
  // Ids grow: the hint makes this insertion O(1).
  l->self = leases_.emplace_hint(leases_.end(), l->id, std::move(owned));
  l->index_pos = inodes_[l->ino].IndexFor(*l).Insert(l);
  open_files_[l->open_file].by_offset.emplace(l->offset, l);
  ++per_uid_[l->uid];
  if (l->owner) l->owner->leases.insert(l->id);
  live_.fetch_add(1, std::memory_order_relaxed);
  Log(LEASEFS_EVENT_GRANT, *l, 0, h.tid, 0);
  return l->id;
}

// REQUIRES: CheckOwnState and AcquireConflicts passed for the conversion.
LeaseId LeaseTable::Impl::Convert(const Holder& h, const LeaseRequest& req) {
  Lease* l = leases_.at(req.convert).get();
  InodeLeases& in = inodes_[l->ino];
  in.IndexFor(*l).Erase(l, l->index_pos);
  l->type = req.type;
  l->flags = req.flags & kKeptFlags;
  l->signal = req.signal;
  l->sigval = req.sigval;
  l->index_pos = in.IndexFor(*l).Insert(l);
  Log(LEASEFS_EVENT_GRANT, *l, 0, h.tid, 0);
  return l->id;
}

Result<LeaseId> LeaseTable::Impl::Unlock(const Holder& h, const LeaseRequest& req) {
  MutexLock l(&mu_);
  auto of = open_files_.find(h.open_file);
  if (of == open_files_.end()) return Status::Error(ENOENT, "no lease on this open file");
  auto& by_offset = of->second.by_offset;
  std::vector<Lease*> victims;
  if (req.offset == 0 && req.length == 0) {
    for (auto& [offset, lease] : by_offset) victims.push_back(lease);
  } else if (auto it = by_offset.find(req.offset);
             it != by_offset.end() && it->second->length == req.length) {
    victims.push_back(it->second);
  }
  if (victims.empty()) return Status::Error(ENOENT, "no lease with that range");
  // [Jan], semantics-2019 §1 F.22: a lease may not go before its pins.
  for (Lease* v : victims) {
    if (v->pins > 0) return Status::Error(EBUSY, "the lease counts pins: unpin first");
  }
  for (Lease* v : victims) Release(v, LEASEFS_WHY_UNLOCK, h.tid);
  return LeaseId{0};
}

// ---------------------------------------------------------------- state changes

// Takes `l` out of the conflict indexes (it is revoked or going).
void LeaseTable::Impl::Unindex(Lease* l) {
  auto it = inodes_.find(l->ino);
  InodeLeases& in = it->second;
  in.IndexFor(*l).Erase(l, l->index_pos);
  if (l->state == LEASEFS_STATE_BREAKING) {
    --in.breaking;
    deadlines_.erase({l->deadline, l->id});
  }
  if (in.unused()) inodes_.erase(it);
  live_.fetch_sub(1, std::memory_order_relaxed);
}

void LeaseTable::Impl::Release(Lease* l, uint32_t why, pid_t actor) {
  Log(LEASEFS_EVENT_RELEASE, *l, why, actor, 0);
  if (l->live()) Unindex(l);
  auto of = open_files_.find(l->open_file);
  if (l->state != LEASEFS_STATE_ACTIVE) --of->second.alerting;
  of->second.by_offset.erase(l->offset);
  if (of->second.by_offset.empty()) open_files_.erase(of);
  if (--per_uid_[l->uid] == 0) per_uid_.erase(l->uid);
  if (l->owner) {
    l->owner->leases.erase(l->id);
    if (l->owner->leases.empty() && !l->owner->dead) {
      idle_owners_.push_back(l->owner->serial);
      TrimIdleOwners();
    }
  }
  leases_.erase(l->self);
  sync_->cv.notify_all();
}

void LeaseTable::Impl::MarkBreaking(Lease* l, uint64_t now, const LayoutChange& c, pid_t actor,
                                    std::vector<Notice>* notices) {
  if (l->state != LEASEFS_STATE_ACTIVE) return;  // notified once per break
  l->state = LEASEFS_STATE_BREAKING;
  l->ever_broken = true;
  l->breaking_since = now;
  l->deadline = options_.break_time.count() == 0
                    ? 0
                    : now + static_cast<uint64_t>(options_.break_time.count()) * 1'000'000u;
  if (l->deadline != 0) deadlines_.insert({l->deadline, l->id});
  ++inodes_[l->ino].breaking;
  ++open_files_[l->open_file].alerting;
  Log(LEASEFS_EVENT_BREAK, *l, static_cast<uint32_t>(c.kind), actor, 0);
  notices->push_back({l->open_file, l->owner, l->signal, l->sigval, l->uid});
}

// The break time ran out: the lease stops counting, and stays on its open
// file as a tombstone until released.
void LeaseTable::Impl::Revoke(Lease* l) {
  Unindex(l);
  l->state = LEASEFS_STATE_REVOKED;
  Log(LEASEFS_EVENT_REVOKE, *l, 0, 0, 0);
  sync_->cv.notify_all();
}

// Revokes the leases whose break time ran out. One that counts pins waits
// for them under PinnedBreak::kWait (overdue: revoked with the last one);
// otherwise its id goes to `to_fence`, for the caller to fence unlocked
// (FenceAndRevoke), or, with no `to_fence`, stays for the table's thread.
void LeaseTable::Impl::RevokeExpired(uint64_t now, std::vector<LeaseId>* to_fence) {
  auto it = deadlines_.begin();
  while (it != deadlines_.end() && it->first <= now) {
    Lease* l = leases_.at(it->second).get();
    ++it;  // what follows erases l's own entry at most
    if (l->pins == 0) {
      Revoke(l);
    } else if (options_.pinned_break == PinnedBreak::kWait) {
      deadlines_.erase({l->deadline, l->id});
      l->deadline = 0;
      l->overdue = true;
    } else if (to_fence != nullptr && !l->fencing) {
      l->fencing = true;
      to_fence->push_back(l->id);
    }
  }
}

void LeaseTable::Impl::Orphan(Lease* l, uint32_t why, pid_t actor) {
  if (l->zombie) return;
  l->zombie = true;
  Log(LEASEFS_EVENT_ZOMBIE, *l, why, actor, 0);
}

void LeaseTable::Impl::FenceAndRevoke(const std::vector<LeaseId>& ids) {
  PinFencer* fencer = nullptr;
  {
    MutexLock l(&mu_);
    fencer = fencer_;
    if (fencer != nullptr) ++fencer_calls_;
  }
  for (LeaseId id : ids) {
    // Past this call nothing reaches the blocks through the pins, so the
    // change that waits for the lease may free them.
    const size_t fenced = fencer != nullptr ? fencer->FenceLease(id) : 0;
    MutexLock l(&mu_);
    auto it = leases_.find(id);
    if (it == leases_.end()) continue;
    Lease* lease = it->second.get();
    lease->fencing = false;
    lease->pins -= static_cast<uint32_t>(std::min<size_t>(fenced, lease->pins));
    if (fenced > 0 && lease->live()) Log(LEASEFS_EVENT_FENCE, *lease, 0, 0, 0);
    if (lease->zombie) {
      Release(lease, LEASEFS_WHY_CLOSE, 0);  // nobody is left to see a tombstone
    } else if (lease->live()) {
      Revoke(lease);
    }
  }
  if (fencer != nullptr) {
    MutexLock l(&mu_);
    --fencer_calls_;
    sync_->cv.notify_all();
  }
}

// ---------------------------------------------------------------- breaking

// Sorts the live leases `c` reaches into what they ask of the breaker
// (docs/leases.md, "Conflicts"). EDEADLOCK wins over ETXTBSY: the breaker's
// own lease would stop it whatever the others do.
Verdict LeaseTable::Impl::Classify(const engine::Cred& by, const LayoutChange& c) {
  Verdict v;
  if (c.kind == LayoutChangeKind::kOverwrite && options_.write_break == WriteBreak::kUnmapOnly) {
    return v;
  }
  auto it = inodes_.find(c.ino);
  if (it == inodes_.end()) return v;
  const auto [lo, hi] = QueryRange(c);
  auto refuse = [&v](int err, Lease* l) {
    if (v.refuse == 0 || err == EDEADLOCK) {
      v.refuse = err;
      v.refused_by = l;
    }
  };
  it->second.ForEachOverlap(lo, hi, [&](Lease* l) {
    if (!Reaches(l->offset, l->end(), c)) return true;
    const Kind k = l->kind();
    if (by.open_file() != 0 && l->open_file == by.open_file()) {
      // Pins too: the holder may not free blocks a device may write
      // ([Willy], semantics-2019 §5 scenario 9), whatever the lease's kind.
      if (k == Kind::kExclusive || k == Kind::kReadUnbreakable || l->pins > 0) {
        refuse(EDEADLOCK, l);
      } else if (k == Kind::kRead) {
        v.own.push_back(l);
      }  // WRITE, WRITE|UNBREAKABLE: the holder's own change
    } else if (k == Kind::kRead || k == Kind::kWrite) {
      v.others.push_back(l);
    } else if (k == Kind::kExclusive &&
               (l->pins > 0 || l->state == LEASEFS_STATE_BREAKING) &&
               options_.pinned_break != PinnedBreak::kRefuse) {
      // A recall in progress is waited for even once its pins went.
      // docs/pins.md: under fence or wait a pinned layout is recalled.
      if (l->zombie && l->state == LEASEFS_STATE_ACTIVE) {
        v.zombies.push_back(l);
      } else {
        v.others.push_back(l);
      }
    } else {
      refuse(ETXTBSY, l);
    }
    return true;
  });
  return v;
}

Status LeaseTable::Impl::Refuse(const Verdict& v, const engine::Cred& by, const LayoutChange& c) {
  Log(LEASEFS_EVENT_REFUSED, *v.refused_by, static_cast<uint32_t>(c.kind), by.pid(), v.refuse);
  return Status::Error(v.refuse, v.refuse == EDEADLOCK
                                     ? "the caller's own unbreakable lease conflicts"
                                     : "an unbreakable lease conflicts");
}

void LeaseTable::Impl::BreakDone(const engine::Cred& by, const LayoutChange& c, int err) {
  Event e;
  e.type = LEASEFS_EVENT_BREAK_DONE;
  e.why = static_cast<uint32_t>(c.kind);
  e.ino = c.ino;
  e.offset = c.offset;
  e.length = c.length == LayoutChange::kToEnd ? 0 : c.length;  // the ABI's "to the end"
  e.actor_pid = by.pid();
  e.err = err;
  log_.Append(e);
  sync_->cv.notify_all();
}

Status LeaseTable::Impl::Break(const engine::Cred& by, const LayoutChange& change, bool nonblock,
                               WaitToken* wait) {
  if (live_.load(std::memory_order_relaxed) == 0) return Status::Ok();
  for (;;) {
    std::vector<LeaseId> to_fence;
    std::vector<Notice> notices;
    std::vector<LeaseId> waiting_for;
    PendingBreak pending{change};
    Status early;
    {
      MutexLock l(&mu_);
      Verdict v = Classify(by, change);
      if (v.refuse != 0) return Refuse(v, by, change);
      if (v.others.empty() && v.own.empty() && v.zombies.empty()) return Status::Ok();
      if (options_.pinned_break == PinnedBreak::kFence) {
        for (Lease* z : v.zombies) {
          if (!z->fencing) {
            z->fencing = true;
            to_fence.push_back(z->id);
          }
        }
      }
      if (to_fence.empty()) {
        const uint64_t now = MonotonicNs();
        for (Lease* lease : v.others) MarkBreaking(lease, now, change, by.pid(), &notices);
        for (Lease* lease : v.own) MarkBreaking(lease, now, change, by.pid(), &notices);
        if (!v.own.empty() || nonblock) {
          early = Status::Error(EWOULDBLOCK, v.own.empty() ? "a lease is breaking"
                                                           : "the caller's own lease conflicts");
          BreakDone(by, change, EWOULDBLOCK);
        } else {
          for (Lease* lease : v.others) waiting_for.push_back(lease->id);
          for (Lease* lease : v.zombies) waiting_for.push_back(lease->id);
          inodes_[change.ino].breaks.push_back(&pending);
        }
      }
    }
    if (!to_fence.empty()) {
      FenceAndRevoke(to_fence);  // then look again: the change may meet more
      continue;
    }
    Send(notices);
    if (waiting_for.empty()) return early;
    MutexLock l(&mu_);
    Status s = WaitGone(waiting_for, wait);
    auto& breaks = inodes_[change.ino].breaks;
    breaks.erase(std::find(breaks.begin(), breaks.end(), &pending));
    if (inodes_[change.ino].unused()) inodes_.erase(change.ino);
    BreakDone(by, change, s.err());
    return s;
  }
}

// Waits until none of the leases `ids` is live, revoking those whose
// deadline passes.
Status LeaseTable::Impl::WaitGone(const std::vector<LeaseId>& ids, WaitToken* wait) {
  for (;;) {
    const uint64_t now = MonotonicNs();
    RevokeExpired(now, nullptr);
    uint64_t earliest = 0;
    bool any = false;
    for (LeaseId id : ids) {
      auto it = leases_.find(id);
      if (it == leases_.end() || !it->second->live()) continue;
      any = true;
      // A deadline that passed belongs to a lease whose pins the table's
      // thread fences; its revocation wakes us.
      const uint64_t d = it->second->deadline;
      if (d > now && (earliest == 0 || d < earliest)) earliest = d;
    }
    if (!any) return Status::Ok();
    LFS_RETURN_IF_ERROR(Wait(wait, earliest));
  }
}

void LeaseTable::Impl::Send(const std::vector<Notice>& notices) {
  if (notices.empty()) return;
  Wake();  // new deadlines for the thread
  std::unordered_set<OpenFileId> told;
  for (const Notice& n : notices) {
    if (notifier_ != nullptr && told.insert(n.open_file).second) {
      notifier_->LeaseBreaking(n.open_file);
    }
    // A holder that is gone cannot be told; its death releases the lease.
    // The daemon may be root: it sends only what the taker could send to
    // the process as it is now (Linux checks F_SETSIG signals alike).
    if (n.signal != 0 && n.owner &&
        MaySignal(n.taker, n.owner->tgid, n.owner->pidfd.get()))
      (void)QueueSignal(n.owner->pidfd.get(), n.signal, n.sigval);
  }
}

Status LeaseTable::Impl::MayChange(const engine::Cred& by, const LayoutChange& change) {
  if (live_.load(std::memory_order_relaxed) == 0) return Status::Ok();
  MutexLock l(&mu_);
  Verdict v = Classify(by, change);
  if (v.refuse != 0) return Refuse(v, by, change);
  if (!v.others.empty() || !v.own.empty() || !v.zombies.empty()) {
    return Status::Error(ERESTART, "a lease must be broken first");
  }
  return Status::Ok();
}

// ---------------------------------------------------------------- queries

LeaseInfo LeaseTable::Impl::InfoOf(const Lease& l) const {
  LeaseInfo i;
  i.id = l.id;
  i.ino = l.ino;
  i.offset = l.offset;
  i.length = l.length;
  i.type = l.type;
  i.flags = l.flags;
  i.state = l.state;
  i.holder_pid = l.holder_pid();
  i.open_file = l.open_file;
  i.breaking_since = l.breaking_since;
  i.break_deadline = l.deadline;
  if (l.zombie && l.state == LEASEFS_STATE_ACTIVE) i.state = LEASEFS_STATE_ZOMBIE;
  i.pins = l.pins;
  return i;
}

LeaseInfo LeaseTable::Impl::GetLease(OpenFileId open_file, uint64_t offset) {
  MutexLock l(&mu_);
  auto of = open_files_.find(open_file);
  if (of == open_files_.end()) return LeaseInfo{};
  auto it = of->second.by_offset.upper_bound(offset);
  if (it == of->second.by_offset.begin()) return LeaseInfo{};
  const Lease& lease = *std::prev(it)->second;
  return lease.end() > offset ? InfoOf(lease) : LeaseInfo{};
}

std::vector<LeaseInfo> LeaseTable::Impl::List(LeaseId after, size_t max, bool* more) {
  MutexLock l(&mu_);
  std::vector<LeaseInfo> out;
  auto it = leases_.upper_bound(after);
  for (; it != leases_.end() && out.size() < max; ++it) out.push_back(InfoOf(*it->second));
  if (more != nullptr) *more = it != leases_.end();
  return out;
}

bool LeaseTable::Impl::AnyLeases(engine::Ino ino) {
  if (live_.load(std::memory_order_relaxed) == 0) return false;
  MutexLock l(&mu_);
  auto it = inodes_.find(ino);
  return it != inodes_.end() && !(it->second.shared.empty() && it->second.exclusive.empty());
}

bool LeaseTable::Impl::Pollpri(OpenFileId open_file) {
  MutexLock l(&mu_);
  auto of = open_files_.find(open_file);
  return of != open_files_.end() && of->second.alerting > 0;
}

void LeaseTable::Impl::CloseOpenFile(OpenFileId open_file) {
  MutexLock l(&mu_);
  auto of = open_files_.find(open_file);
  if (of == open_files_.end()) return;
  std::vector<Lease*> victims;
  for (auto& [offset, lease] : of->second.by_offset) victims.push_back(lease);
  for (Lease* v : victims) {
    if (v->pins > 0) {
      Orphan(v, LEASEFS_WHY_CLOSE, 0);
    } else {
      Release(v, LEASEFS_WHY_CLOSE, 0);
    }
  }
}

// ---------------------------------------------------------------- pins

void LeaseTable::Impl::SetPinFencer(PinFencer* fencer) {
  MutexLock l(&mu_);
  fencer_ = fencer;
  // The old fencer may be about to go: wait out the calls it is in.
  std::unique_lock<std::mutex> lk(mu_.native(), std::adopt_lock);
  while (fencer_calls_ > 0) sync_->cv.wait(lk);
  lk.release();
}

Result<LeaseId> LeaseTable::Impl::AddPin(OpenFileId open_file, uint64_t offset, uint64_t length,
                                         pid_t tgid, engine::Ino ino) {
  uint64_t end = 0;
  if (length == 0 || __builtin_add_overflow(offset, length, &end)) {
    return Status::Error(EINVAL, "a pin needs a range");
  }
  MutexLock l(&mu_);
  if (stopping_) return Status::Error(ESHUTDOWN, "lease table shut down");
  auto of = open_files_.find(open_file);
  if (of == open_files_.end()) return Status::Error(EPERM, "no lease on this open file");
  auto it = of->second.by_offset.upper_bound(offset);
  if (it == of->second.by_offset.begin()) return Status::Error(EPERM, "no lease covers the range");
  Lease* lease = std::prev(it)->second;
  if (lease->end() < end) return Status::Error(EPERM, "no lease covers the whole range");
  if (ino != 0 && lease->ino != ino) return Status::Error(EPERM, "the lease is of another inode");
  // Semantics-2019 §5 scenarios 1 and 2: a pin needs a lease nobody else
  // can break, and one that is not already on its way out.
  if (!lease->pinnable()) return Status::Error(EPERM, "the lease is not exclusive");
  if (lease->state != LEASEFS_STATE_ACTIVE || lease->zombie) {
    return Status::Error(EPERM, "the lease is breaking or revoked");
  }
  // Scenario 7's last line: a process pins only under a lease of its own.
  if (tgid != 0 && lease->owner && lease->owner->tgid != tgid) {
    return Status::Error(EPERM, "the lease is another process's");
  }
  ++lease->pins;
  return lease->id;
}

void LeaseTable::Impl::DropPin(LeaseId id) {
  MutexLock l(&mu_);
  auto it = leases_.find(id);
  if (it == leases_.end() || it->second->pins == 0) return;
  Lease* lease = it->second.get();
  if (--lease->pins > 0) return;
  if (lease->zombie) {
    Release(lease, LEASEFS_WHY_CLOSE, 0);
  } else if (lease->overdue && lease->live()) {
    Revoke(lease);
  } else {
    sync_->cv.notify_all();  // a conversion or UNLOCK may go now; waiters look again
  }
}

// ---------------------------------------------------------------- events

void LeaseTable::Impl::Log(uint32_t type, const Lease& l, uint32_t why, pid_t actor, int err) {
  Event e;
  e.type = type;
  e.why = why;
  e.lease_id = l.id;
  e.ino = l.ino;
  e.offset = l.offset;
  e.length = l.length;
  e.lease_type = l.type | l.flags << 8;
  e.holder_pid = l.holder_pid();
  e.actor_pid = actor;
  e.err = err;
  log_.Append(e);
  sync_->cv.notify_all();
}

Result<std::vector<Event>> LeaseTable::Impl::Events(uint64_t after, size_t max,
                                                    std::chrono::milliseconds timeout,
                                                    WaitToken* wait, uint64_t* lost) {
  uint64_t lost_here = 0;
  const uint64_t deadline =
      MonotonicNs() + static_cast<uint64_t>(std::max<int64_t>(timeout.count(), 0)) * 1'000'000u;
  MutexLock l(&mu_);
  while (log_.last_seq() <= after && timeout.count() > 0 && MonotonicNs() < deadline) {
    LFS_RETURN_IF_ERROR(Wait(wait, deadline));
  }
  std::vector<Event> out = log_.After(after, max, &lost_here);
  if (lost != nullptr) *lost = lost_here;
  return out;
}

// ---------------------------------------------------------------- the thread

int LeaseTable::Impl::ThreadTimeoutMs() {
  if (deadlines_.empty()) return -1;
  const uint64_t now = MonotonicNs();
  const uint64_t d = deadlines_.begin()->first;
  if (d <= now) return 0;
  return static_cast<int>(std::min<uint64_t>((d - now + 999'999) / 1'000'000, 60'000));
}

// Revokes leases at their deadlines whether or not a breaker still waits,
// and releases the leases of processes that die.
void LeaseTable::Impl::ThreadLoop() {
  for (;;) {
    int timeout = -1;
    {
      MutexLock l(&mu_);
      if (thread_stop_) return;
      timeout = ThreadTimeoutMs();
    }
    epoll_event events[16];
    const int n = epoll_wait(epoll_.get(), events, 16, timeout);
    std::vector<LeaseId> to_fence;
    {
      MutexLock l(&mu_);
      for (int i = 0; i < n; ++i) {
        if (events[i].data.u64 == 0) {
          uint64_t count;
          [[maybe_unused]] ssize_t r = ::read(wake_.get(), &count, sizeof(count));
        } else {
          OwnerDied(events[i].data.u64);
        }
      }
      RevokeExpired(MonotonicNs(), &to_fence);
    }
    if (!to_fence.empty()) FenceAndRevoke(to_fence);
  }
}

// ---------------------------------------------------------------- LeaseTable

LeaseTable::LeaseTable(const Options& options, BreakNotifier* notifier)
    : options_(options), impl_(std::make_unique<Impl>(options, notifier)) {}
LeaseTable::~LeaseTable() = default;

std::shared_ptr<WaitToken> LeaseTable::NewWaitToken() {
  return std::make_shared<WaitToken>(impl_->sync());
}
Result<LeaseId> LeaseTable::SetLease(const Holder& h, const LeaseRequest& req, WaitToken* wait) {
  return impl_->SetLease(h, req, wait);
}
LeaseInfo LeaseTable::GetLease(OpenFileId open_file, uint64_t offset) const {
  return impl_->GetLease(open_file, offset);
}
std::vector<LeaseInfo> LeaseTable::List(LeaseId after, size_t max, bool* more) const {
  return impl_->List(after, max, more);
}
bool LeaseTable::AnyLeases(engine::Ino ino) const { return impl_->AnyLeases(ino); }
bool LeaseTable::Pollpri(OpenFileId open_file) const { return impl_->Pollpri(open_file); }
Status LeaseTable::Break(const engine::Cred& by, const LayoutChange& change, bool nonblock,
                         WaitToken* wait) {
  return impl_->Break(by, change, nonblock, wait);
}
void LeaseTable::CloseOpenFile(OpenFileId open_file) { impl_->CloseOpenFile(open_file); }
Result<std::vector<Event>> LeaseTable::Events(uint64_t after, size_t max,
                                              std::chrono::milliseconds timeout, WaitToken* wait,
                                              uint64_t* lost) {
  return impl_->Events(after, max, timeout, wait, lost);
}
Status LeaseTable::MayChange(const engine::Cred& by, const LayoutChange& change) {
  return impl_->MayChange(by, change);
}
void LeaseTable::Shutdown() { impl_->Shutdown(); }
void LeaseTable::SetPinFencer(PinFencer* fencer) { impl_->SetPinFencer(fencer); }
Result<LeaseId> LeaseTable::AddPin(OpenFileId open_file, uint64_t offset, uint64_t length,
                                   pid_t tgid, engine::Ino ino) {
  return impl_->AddPin(open_file, offset, length, tgid, ino);
}
void LeaseTable::DropPin(LeaseId lease) { impl_->DropPin(lease); }

}  // namespace leasefs::lease
