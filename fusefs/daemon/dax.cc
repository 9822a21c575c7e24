#include "fusefs/daemon/dax.h"

#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <system_error>

#include "engine/layout.h"
#include "lease/process.h"

namespace leasefs::daemon {

namespace {

uint64_t ThisBoot() {
  static const uint64_t boot = lease::BootId();
  return boot;
}

// Process `pid` as it is now, pinned by a pidfd opened before its start
// time is read, so that the two name one process (ESRCH if it is gone).
Result<DaxMaps::Process> Pin(pid_t pid) {
  LFS_ASSIGN_OR_RETURN(UniqueFd pidfd, lease::OpenPidfd(pid));
  LFS_ASSIGN_OR_RETURN(uint64_t start, lease::ProcessStartTicks(pid));
  if (lease::PidfdExited(pidfd.get())) return Status::Error(ESRCH, "process exited");
  DaxMaps::Process p;
  p.owner = {pid, start, ThisBoot()};
  p.pidfd = std::make_shared<UniqueFd>(std::move(pidfd));
  return p;
}

}  // namespace

Result<DaxMaps::Process> DaxMaps::Identify(pid_t tid) {
  if (tid <= 0) return Status::Error(EPERM, "caller outside the mount's pid namespace");
  LFS_ASSIGN_OR_RETURN(pid_t pid, lease::ThreadGroupOf(tid));
  return Pin(pid);
}

DaxMaps::DaxMaps(engine::Filesystem* fs)
    : fs_(fs),
      epoll_(epoll_create1(EPOLL_CLOEXEC)),
      wake_(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = 0;
  if (!epoll_.valid() || !wake_.valid() ||
      epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, wake_.get(), &ev) != 0) {
    throw std::system_error(errno, std::generic_category(), "dax maps: epoll");
  }
  Adopt();
  thread_ = std::thread([this] { ThreadLoop(); });
}

DaxMaps::~DaxMaps() {
  {
    MutexLock l(&mu_);
    stop_ = true;
  }
  const uint64_t one = 1;
  [[maybe_unused]] ssize_t n = ::write(wake_.get(), &one, sizeof(one));
  thread_.join();
}

void DaxMaps::Adopt() {
  // Group the records by mapping: each mapping has one owner and one user.
  struct Found {
    engine::Filesystem::ReachOwner owner;
    uid_t uid = 0;
    size_t records = 0;
    Range range;
  };
  std::map<uint64_t, Found> found;
  for (const auto& r : fs_->ReachRecords()) {
    auto [it, fresh] = found.try_emplace(r.map_id);
    Found& f = it->second;
    if (fresh) {
      f.owner = r.owner;
      f.uid = r.uid;
      f.range = Range{r.ino, r.file_block * layout::kBlockSize, 0, r.writable};
    }
    ++f.records;
    f.range.length = r.file_block * layout::kBlockSize + r.length * layout::kBlockSize -
                     f.range.offset;
  }
  std::vector<uint64_t> dead;
  size_t kept = 0;
  {
    MutexLock l(&mu_);
    for (const auto& [id, f] : found) {
      next_id_ = std::max(next_id_, id + 1);
      // Still the same living process: the pid, its start time and the boot.
      auto p = f.owner.pid > 0 ? Pin(f.owner.pid) : Result<Process>(Status::Error(ESRCH));
      if (!p.ok() || !(p->owner == f.owner)) {
        dead.push_back(id);
        continue;
      }
      // Charged to the user who made it, as before the restart.
      Owner* o = OwnerFor(*p, f.uid);
      if (o == nullptr) {
        dead.push_back(id);  // cannot watch it: cannot keep it forever either
        continue;
      }
      o->maps.push_back(id);
      const size_t charged = f.uid != 0 ? f.records : 0;
      records_by_uid_[f.uid] += charged;
      maps_[id] = Map{o->serial, 0, true, charged, f.uid, f.range};
      ++kept;
    }
  }
  DropAll(dead);
  if (!found.empty()) {
    std::fprintf(stderr,
                 "leasefs: DAX mappings from before: %zu kept (their processes live), %zu "
                 "dropped\n",
                 kept, dead.size());
  }
}

uint64_t DaxMaps::NextId() {
  MutexLock l(&mu_);
  return next_id_++;
}

Result<size_t> DaxMaps::Allowance(uid_t uid, size_t want) {
  if (uid == 0) return want;
  const uint64_t cap = fs_->Quarantine().capacity / kUserShareDivisor;
  MutexLock l(&mu_);
  size_t procs = 0;
  for (const auto& [serial, o] : owners_) procs += o.uid == uid;
  if (procs >= kMaxOwnersPerUser) {
    return Status::Error(ENOLCK, "too many processes of this user have DAX mappings");
  }
  size_t& used = records_by_uid_[uid];
  if (used >= cap) return Status::Error(EDQUOT, "this user has its share of the quarantine table");
  const size_t n = std::min<size_t>(want, cap - used);
  used += n;
  return n;
}

void DaxMaps::GiveBack(uid_t uid, size_t reserved) {
  MutexLock l(&mu_);
  Uncharge(uid, reserved);
}

void DaxMaps::Uncharge(uid_t uid, size_t records) {
  if (uid == 0) return;  // root has no share to keep
  size_t& used = records_by_uid_[uid];
  used -= std::min(used, records);
}

DaxMaps::Owner* DaxMaps::OwnerFor(const Process& proc, uid_t uid) {
  for (auto& [serial, o] : owners_) {
    if (o.id == proc.owner) return &o;
  }
  const uint64_t serial = next_serial_++;
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = serial;
  if (epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, proc.pidfd->get(), &ev) != 0) return nullptr;
  Owner& o = owners_[serial];
  o.uid = uid;
  o.id = proc.owner;
  o.pidfd = proc.pidfd;
  o.serial = serial;
  return &o;
}

bool DaxMaps::Add(const Process& proc, uid_t uid, uint64_t map_id, uint64_t open_file,
                  size_t records, size_t reserved, const Range& range) {
  bool drop = false;
  {
    MutexLock l(&mu_);
    // Settle the reservation: what was not used goes back.
    Uncharge(uid, reserved - std::min(reserved, records));
    Owner* o = OwnerFor(proc, uid);
    if (o == nullptr) {
      Uncharge(uid, records);
      drop = true;
    } else {
      o->maps.push_back(map_id);
      maps_[map_id] = Map{o->serial, open_file, false, uid != 0 ? records : 0, uid, range};
      // Registered before this check: a death after it is the thread's.
      if (lease::PidfdExited(o->pidfd->get())) {
        Bury(o->serial);
        drop = true;
      }
    }
  }
  if (drop) DropAll({map_id});
  return !drop;
}

std::vector<uint64_t> DaxMaps::Bury(uint64_t serial) {
  std::vector<uint64_t> ids;
  auto it = owners_.find(serial);
  if (it == owners_.end()) return ids;
  for (uint64_t id : it->second.maps) {
    auto m = maps_.find(id);
    if (m == maps_.end()) continue;
    Uncharge(m->second.uid, m->second.records);
    maps_.erase(m);
    ids.push_back(id);
  }
  // Closing the last reference to the pidfd takes it out of epoll; take it
  // out now in case a request still holds one.
  epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, it->second.pidfd->get(), nullptr);
  owners_.erase(it);
  return ids;
}

void DaxMaps::DropAll(const std::vector<uint64_t>& ids) {
  for (uint64_t id : ids) fs_->DropReach(id);
}

void DaxMaps::Remove(const Process& proc,
                     const std::function<bool(uint64_t id, const Range&)>& match,
                     std::vector<uint64_t>* ids, std::vector<Range>* ranges) {
  for (auto& [serial, o] : owners_) {
    if (!(o.id == proc.owner)) continue;
    for (auto it = o.maps.begin(); it != o.maps.end();) {
      auto m = maps_.find(*it);
      if (m == maps_.end() || !match(*it, m->second.range)) {
        ++it;
        continue;
      }
      Uncharge(m->second.uid, m->second.records);
      ranges->push_back(m->second.range);
      maps_.erase(m);
      ids->push_back(*it);
      it = o.maps.erase(it);
    }
    // Nothing left to watch it for: it no longer counts among the user's
    // processes either.
    if (o.maps.empty()) {
      epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, o.pidfd->get(), nullptr);
      const uint64_t key = serial;  // not a reference into the node erased
      owners_.erase(key);
    }
    return;
  }
}

Result<std::vector<DaxMaps::Range>> DaxMaps::Unmap(const Process& proc, uint64_t map_id) {
  std::vector<uint64_t> ids;
  std::vector<Range> ranges;
  {
    MutexLock l(&mu_);
    Remove(
        proc,
        [map_id](uint64_t id, const Range& r) { return !r.pinned && (map_id == 0 || id == map_id); },
        &ids, &ranges);
  }
  if (ids.empty()) return Status::Error(ENOENT, "no such mapping of this process");
  DropAll(ids);
  return ranges;
}

bool DaxMaps::DropPinned(const Process& proc, uint64_t map_id) {
  std::vector<uint64_t> ids;
  std::vector<Range> ranges;
  {
    MutexLock l(&mu_);
    Remove(
        proc, [map_id](uint64_t id, const Range& r) { return r.pinned && id == map_id; }, &ids,
        &ranges);
  }
  DropAll(ids);
  return !ids.empty();
}

bool DaxMaps::WritableMapped(engine::Ino ino) const {
  MutexLock l(&mu_);
  for (const auto& [id, m] : maps_) {
    if (m.range.writable && m.range.ino == ino) return true;
  }
  return false;
}

void DaxMaps::FileClosed(uint64_t open_file) {
  MutexLock l(&mu_);
  for (auto& [id, m] : maps_) {
    if (m.open_file == open_file) m.open_file = 0;
  }
}

std::map<uint64_t, DaxMaps::MapInfo> DaxMaps::Infos() const {
  std::map<uint64_t, MapInfo> out;
  MutexLock l(&mu_);
  for (const auto& [id, m] : maps_) out[id] = MapInfo{m.open_file, m.restart, m.uid};
  return out;
}

void DaxMaps::ThreadLoop() {
  for (;;) {
    epoll_event events[16];
    const int n = epoll_wait(epoll_.get(), events, 16, -1);
    if (n < 0 && errno != EINTR) return;
    std::vector<uint64_t> dead;
    {
      MutexLock l(&mu_);
      if (stop_) return;
      for (int i = 0; i < n; ++i) {
        const uint64_t key = events[i].data.u64;
        if (key == 0) {
          uint64_t v;
          [[maybe_unused]] ssize_t r = ::read(wake_.get(), &v, sizeof(v));
          continue;
        }
        auto ids = Bury(key);
        dead.insert(dead.end(), ids.begin(), ids.end());
      }
    }
    DropAll(dead);
  }
}

}  // namespace leasefs::daemon
