#include "fusefs/daemon/pool_lock.h"

#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <fstream>
#include <iomanip>
#include <optional>
#include <sstream>
#include <thread>

#include <sys/file.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include "fusefs/daemon/mountpoint.h"

namespace leasefs::daemon {

namespace {

using Clock = std::chrono::steady_clock;

constexpr auto kPollInterval = std::chrono::milliseconds(10);
// Tries of the lock, kPollInterval apart, while no holder record explains who
// holds it: the holder may be between removing its record and closing.
constexpr int kUnknownTries = 3;

// What a holder record says: "PID MOUNT_ID\nMOUNTPOINT" (the mount point,
// which may hold any byte but NUL, runs to the end of the file).
struct Record {
  pid_t pid = 0;
  uint64_t mount_id = 0;
  std::string mountpoint;
};

// The directory of holder records: /run/leasefs for root, else
// $XDG_RUNTIME_DIR/leasefs; empty when there is none.
std::string RecordDir() {
  if (geteuid() == 0) return "/run/leasefs";
  const char* xdg = getenv("XDG_RUNTIME_DIR");
  return xdg && *xdg == '/' ? std::string(xdg) + "/leasefs" : std::string();
}

// The record's path for the pool open as `fd`, named by the pool's device and
// inode number (the path may differ between daemons: links, relative paths).
std::string RecordPath(int fd) {
  const std::string dir = RecordDir();
  struct stat st {};
  if (dir.empty() || fstat(fd, &st) != 0) return {};
  return dir + "/pool-" + std::to_string(st.st_dev) + "-" + std::to_string(st.st_ino);
}

std::optional<Record> ReadRecord(const std::string& path) {
  std::ifstream in(path);
  Record r;
  if (!(in >> r.pid >> r.mount_id) || in.get() != '\n') return std::nullopt;
  std::ostringstream rest;
  rest << in.rdbuf();
  r.mountpoint = rest.str();
  if (r.pid <= 0 || r.mountpoint.empty()) return std::nullopt;
  return r;
}

// True if /proc/locks shows `pid` holding a flock on the file open as `fd`.
// Lines: "1: FLOCK  ADVISORY  WRITE PID MAJ:MIN:INO 0 EOF" (MAJ and MIN in
// hex); waiters ("1: -> FLOCK ...") hold nothing.
bool HoldsFlock(pid_t pid, int fd) {
  struct stat st {};
  if (fstat(fd, &st) != 0) return false;
  std::ostringstream want;
  want << std::hex << std::setfill('0') << std::setw(2) << major(st.st_dev) << ':' << std::setw(2)
       << minor(st.st_dev) << ':' << std::dec << st.st_ino;
  std::ifstream in("/proc/locks");
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    std::string id, type, advisory, mode, file;
    pid_t holder = 0;
    if (!(fields >> id >> type >> advisory >> mode >> holder >> file)) continue;
    if (type == "FLOCK" && holder == pid && file == want.str()) return true;
  }
  return false;
}

// Who holds the pool's lock, as far as the holder record tells.
enum class Holder {
  kServing,  // a daemon whose mount is still listed
  kLeaving,  // a daemon whose mount is gone
  kUnknown,  // no record, or one the lock's holder did not write
};

Holder Classify(const std::string& record_path, int fd, pid_t* pid) {
  if (record_path.empty()) return Holder::kUnknown;
  const std::optional<Record> r = ReadRecord(record_path);
  if (!r || !HoldsFlock(r->pid, fd)) return Holder::kUnknown;
  *pid = r->pid;
  auto ids = FuseMountIds("/proc/" + std::to_string(r->pid) + "/mountinfo", r->mountpoint);
  if (!ids.ok()) return Holder::kUnknown;  // gone meanwhile: the next try takes the lock
  const bool listed = std::find(ids->begin(), ids->end(), r->mount_id) != ids->end();
  return listed ? Holder::kServing : Holder::kLeaving;
}

bool TryLock(int fd, int* err) {
  if (flock(fd, LOCK_EX | LOCK_NB) == 0) return true;
  *err = errno;
  return false;
}

Status InUse(const std::string& pool) {
  return Status::Error(EWOULDBLOCK, pool + " is in use by another leasefs daemon");
}

}  // namespace

Result<PoolLock> PoolLock::Acquire(int fd, const std::string& pool,
                                   std::chrono::milliseconds max_wait, const WaitNotice& notice) {
  UniqueFd dup_fd(fcntl(fd, F_DUPFD_CLOEXEC, 0));
  if (!dup_fd.valid()) return Status::FromErrno("cannot lock " + pool);
  const std::string record = RecordPath(fd);
  const auto deadline = Clock::now() + max_wait;
  pid_t waiting_for = 0;
  int unknown = 0;
  for (int err = 0; !TryLock(fd, &err);) {
    if (err != EWOULDBLOCK) return Status::Error(err, "cannot lock " + pool);
    pid_t pid = 0;
    switch (Classify(record, fd, &pid)) {
      case Holder::kServing:
        return InUse(pool);
      case Holder::kUnknown:
        if (++unknown >= kUnknownTries) return InUse(pool);
        break;
      case Holder::kLeaving:
        unknown = 0;
        if (waiting_for == 0) notice(pid);
        waiting_for = pid;
        break;
    }
    if (waiting_for != 0 && Clock::now() >= deadline) {
      const auto secs = std::chrono::duration_cast<std::chrono::seconds>(max_wait).count();
      return Status::Error(
          EWOULDBLOCK, pool + " is still held by the leasefs daemon that served it (pid " +
                           std::to_string(waiting_for) + ") after " + std::to_string(secs) + " s");
    }
    std::this_thread::sleep_for(kPollInterval);
  }
  // What a killed daemon recorded is stale now.
  if (!record.empty()) unlink(record.c_str());
  return PoolLock(std::move(dup_fd), record);
}

PoolLock::~PoolLock() {
  if (published_) unlink(record_.c_str());
}

Status PoolLock::Publish(const std::string& canonical_mountpoint) {
  if (record_.empty()) return Status::Error(ENOENT, "no directory for the holder record");
  auto ids = FuseMountIds("/proc/self/mountinfo", canonical_mountpoint);
  if (!ids.ok()) return ids.status();
  if (ids->empty()) return Status::Error(ENOENT, canonical_mountpoint + " is not in mountinfo");
  const std::string dir = record_.substr(0, record_.rfind('/'));
  if (mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST) return Status::FromErrno("mkdir " + dir);
  // Written aside and renamed: a reader sees the whole record or none.
  const std::string tmp = record_ + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << getpid() << ' ' << ids->back() << '\n' << canonical_mountpoint;
    if (!out.flush()) return Status::Error(EIO, "cannot write " + tmp);
  }
  if (rename(tmp.c_str(), record_.c_str()) != 0) {
    const Status s = Status::FromErrno("rename " + tmp);
    unlink(tmp.c_str());
    return s;
  }
  published_ = true;
  return Status::Ok();
}

}  // namespace leasefs::daemon
