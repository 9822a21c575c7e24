#include "fusefs/daemon/peer_fd.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cstdio>
#include <fstream>
#include <map>
#include <sstream>
#include <thread>
#include <vector>

namespace leasefs::daemon {

// Closes descriptors of other filesystems off the request threads: close(2)
// calls the file's flush, and another FUSE filesystem's daemon (one the
// caller may run) can leave a FLUSH unanswered for ever. Each close gets a
// thread of its own, so one that blocks holds up nobody else; a user may have
// at most kMaxPendingPerUser of them at once, so blocked closes cannot use up
// the daemon's descriptors or threads (Take refuses that user with EAGAIN).
class Closer : public std::enable_shared_from_this<Closer> {
 public:
  static constexpr int kMaxPendingPerUser = 16;

  // True if `uid` may hand over one more file.
  bool Admits(uid_t uid) {
    MutexLock l(&mu_);
    auto it = pending_.find(uid);
    return it == pending_.end() || it->second < kMaxPendingPerUser;
  }

  void Post(int fd, uid_t uid) noexcept {
    try {
      {
        MutexLock l(&mu_);
        ++pending_[uid];
      }
      std::thread([self = shared_from_this(), fd, uid] {
        ::close(fd);
        self->Done(uid);
      }).detach();
    } catch (...) {
      ::close(fd);  // no thread or no memory: close here rather than leak
      Done(uid);
    }
  }

 private:
  void Done(uid_t uid) noexcept {
    MutexLock l(&mu_);
    auto it = pending_.find(uid);
    if (it != pending_.end() && --it->second <= 0) pending_.erase(it);
  }

  Mutex mu_;
  std::map<uid_t, int> pending_ GUARDED_BY(mu_);  // closes not yet done, by user
};

namespace {

// From <linux/pidfd.h> (Linux >= 6.13), which this distribution's headers
// predate.
constexpr unsigned kPidfdThread = O_EXCL;  // PIDFD_THREAD, Linux >= 6.9
struct PidfdInfo {
  uint64_t mask;
  uint64_t cgroupid;
  uint32_t pid, tgid, ppid, ruid, rgid, euid, egid, suid, sgid, fsuid, fsgid;
  uint32_t spare0[1];
};
static_assert(sizeof(PidfdInfo) == 64);  // PIDFD_INFO_SIZE_VER0
constexpr unsigned long kPidfdGetInfo = _IOWR(0xFF, 11, PidfdInfo);
constexpr uint64_t kPidfdInfoCreds = 1u << 1;

// One line to the daemon's log, at most once a second: a caller must not be
// able to flood the log by repeating a refused command.
void Warn(const std::string& msg) {
  static std::atomic<int64_t> last{0};
  const int64_t now = std::chrono::duration_cast<std::chrono::seconds>(
                          std::chrono::steady_clock::now().time_since_epoch())
                          .count();
  int64_t prev = last.load(std::memory_order_relaxed);
  if (now <= prev || !last.compare_exchange_strong(prev, now)) return;
  fuse_log(FUSE_LOG_WARNING, "leasefs: %s\n", msg.c_str());
}

std::string Who(const fuse_ctx& ctx) {
  return "pid " + std::to_string(ctx.pid) + " (uid " + std::to_string(ctx.uid) + ")";
}

// A pidfd for the calling thread (PIDFD_THREAD); before Linux 6.9 only a
// thread-group leader can be named, which covers single-threaded callers.
int OpenPidfd(pid_t tid) {
  int fd = static_cast<int>(syscall(SYS_pidfd_open, tid, kPidfdThread));
  if (fd < 0 && errno == EINVAL) fd = static_cast<int>(syscall(SYS_pidfd_open, tid, 0));
  return fd;
}

Result<std::string> Slurp(const std::string& path) {
  std::ifstream in(path);
  if (!in) return Status::Error(errno == ENOENT ? ESRCH : EPERM, "cannot read " + path);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

// The fsuid and fsgid of the task `pidfd` names. Before Linux 6.13 (no
// PIDFD_GET_INFO) they are read from /proc once, and the pidfd then confirms
// that the task was still alive, so the read was of that task and not of a
// newer one that reused its pid.
Status FsIdsOf(int pidfd, pid_t tid, uid_t* uid, gid_t* gid) {
  PidfdInfo info{};
  info.mask = kPidfdInfoCreds;
  if (ioctl(pidfd, kPidfdGetInfo, &info) == 0) {
    *uid = info.fsuid;
    *gid = info.fsgid;
    return Status::Ok();
  }
  if (errno != ENOTTY && errno != EINVAL) return Status::Error(errno, "PIDFD_GET_INFO");
  LFS_ASSIGN_OR_RETURN(std::string status,
                       Slurp("/proc/" + std::to_string(tid) + "/status"));
  if (!FsIdsFromStatus(status, uid, gid)) return Status::Error(EPERM, "unreadable status");
  if (syscall(SYS_pidfd_send_signal, pidfd, 0, nullptr, 0) != 0 && errno != EPERM)
    return Status::Error(ESRCH, "caller gone");
  return Status::Ok();
}

// A pidfd for the thread that sent the request, checked to be that thread.
Result<UniqueFd> CallerPidfd(const fuse_ctx& ctx) {
  if (ctx.pid <= 0) {  // outside the pid namespace the mount was made in
    Warn("a caller outside the mount's pid namespace named a descriptor: refused");
    return Status::Error(EPERM, "caller not visible");
  }
  UniqueFd pidfd(OpenPidfd(ctx.pid));
  if (!pidfd.valid()) return Status::Error(errno == ESRCH ? ESRCH : EPERM, "pidfd_open");
  uid_t uid = 0;
  gid_t gid = 0;
  LFS_RETURN_IF_ERROR(FsIdsOf(pidfd.get(), ctx.pid, &uid, &gid));
  if (uid != ctx.uid || gid != ctx.gid) {
    Warn(Who(ctx) + " no longer has the credentials its request came with: refused");
    return Status::Error(EPERM, "caller changed");
  }
  return pidfd;
}

// Undoes mountinfo's escapes (\040 for a space, and so on).
std::string Unescape(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 3 < s.size()) {
      const std::string oct = s.substr(i + 1, 3);
      if (oct.find_first_not_of("01234567") == std::string::npos) {
        out.push_back(static_cast<char>(std::stoi(oct, nullptr, 8)));
        i += 3;
        continue;
      }
    }
    out.push_back(s[i]);
  }
  return out;
}

std::vector<std::string> Fields(const std::string& line) {
  std::vector<std::string> f;
  std::istringstream in(line);
  for (std::string w; in >> w;) f.push_back(w);
  return f;
}

}  // namespace

PeerFile::~PeerFile() {
  if (fd_.valid() && closer_) closer_->Post(fd_.release(), owner_);
}

PeerFiles::PeerFiles(std::string mountpoint)
    : mountpoint_(std::move(mountpoint)), closer_(std::make_shared<Closer>()) {}

PeerFiles::~PeerFiles() = default;

std::string DeviceOfMountPoint(const std::string& mountinfo, const std::string& path,
                               uid_t mounter) {
  const std::string user_id = "user_id=" + std::to_string(mounter);
  std::string dev;
  std::istringstream in(mountinfo);
  for (std::string line; std::getline(in, line);) {
    const auto f = Fields(line);
    if (f.size() < 5 || Unescape(f[4]) != path) continue;
    // After the optional fields: "-", the type, the source, the superblock's
    // options (where FUSE shows the mounting user).
    size_t sep = 5;
    while (sep < f.size() && f[sep] != "-") ++sep;
    if (sep + 3 >= f.size()) continue;
    const std::string& type = f[sep + 1];
    if (type != "fuse" && type.rfind("fuse.", 0) != 0) continue;
    std::istringstream opts(f[sep + 3]);
    bool mine = false;
    for (std::string o; std::getline(opts, o, ',');) mine = mine || o == user_id;
    if (mine) dev = f[2];  // the last one is on top
  }
  return dev;
}

bool FsIdsFromStatus(const std::string& status, uid_t* fsuid, gid_t* fsgid) {
  bool have_uid = false, have_gid = false;
  std::istringstream in(status);
  for (std::string line; std::getline(in, line);) {
    const auto f = Fields(line);
    if (f.size() != 5 || (f[0] != "Uid:" && f[0] != "Gid:")) continue;
    if (f[4].empty() || f[4].find_first_not_of("0123456789") != std::string::npos) return false;
    const unsigned long v = std::stoul(f[4]);
    if (v > UINT32_MAX) return false;
    if (f[0] == "Uid:") *fsuid = static_cast<uid_t>(v), have_uid = true;
    else *fsgid = static_cast<gid_t>(v), have_gid = true;
  }
  return have_uid && have_gid;
}

Result<dev_t> PeerFiles::OwnDevice() {
  MutexLock l(&mu_);
  if (own_device_) return *own_device_;
  LFS_ASSIGN_OR_RETURN(std::string info, Slurp("/proc/self/mountinfo"));
  // Only a FUSE mount made by this daemon's user: whoever may write the
  // mount's root directory can stack a FUSE mount of their own on the same
  // path (fusermount3), and taking its device for ours would let their files
  // name any of our inodes by number.
  const std::string dev = DeviceOfMountPoint(info, mountpoint_, getuid());
  unsigned major = 0, minor = 0;
  char tail = 0;
  if (std::sscanf(dev.c_str(), "%u:%u%c", &major, &minor, &tail) != 2)
    return Status::Error(EXDEV, "own mount not found");
  own_device_ = makedev(major, minor);
  return *own_device_;
}

Result<PeerFile> PeerFiles::Take(const fuse_ctx& ctx, int64_t fd) {
  if (fd < 0 || fd > INT_MAX) return Status::Error(EBADF);
  if (!closer_->Admits(ctx.uid)) {
    Warn(Who(ctx) + " has too many files of other filesystems still closing: refused");
    return Status::Error(EAGAIN, "too many pending closes");
  }
  LFS_ASSIGN_OR_RETURN(UniqueFd pidfd, CallerPidfd(ctx));
  PeerFile pf;
  pf.owner_ = ctx.uid;
  pf.fd_.reset(static_cast<int>(syscall(SYS_pidfd_getfd, pidfd.get(), static_cast<int>(fd), 0)));
  if (!pf.fd_.valid()) {
    const int err = errno;
    if (err == EPERM)
      Warn("cannot take descriptor " + std::to_string(fd) + " of " + Who(ctx) +
           ": the daemon may not ptrace the caller (run it as root, or as the caller's user "
           "with a dumpable caller)");
    return Status::Error(err, "pidfd_getfd");
  }
  pf.closer_ = closer_;  // until the file is known to be ours
  pf.flags = fcntl(pf.fd_.get(), F_GETFL);
  if (pf.flags < 0) return Status::Error(errno, "F_GETFL");
  if (pf.flags & O_PATH) {
    pf.closer_.reset();  // closing an O_PATH file never calls its flush
    return Status::Error(EBADF, "O_PATH descriptor");
  }
  // AT_STATX_DONT_SYNC: from the kernel's inode, with no request to the
  // file's filesystem (for our own files, no request back to this daemon).
  // A file the daemon may not even stat (another user's FUSE mount without
  // allow_other) is certainly not ours: same_fs stays false.
  struct statx stx {};
  if (statx(pf.fd_.get(), "", AT_EMPTY_PATH | AT_STATX_DONT_SYNC, STATX_TYPE | STATX_INO, &stx))
    return pf;
  pf.ino = stx.stx_ino;
  pf.type = stx.stx_mode & S_IFMT;
  LFS_ASSIGN_OR_RETURN(dev_t own, OwnDevice());
  pf.same_fs = makedev(stx.stx_dev_major, stx.stx_dev_minor) == own;
  // Our own files have no FLUSH (noflush) and release asynchronously.
  if (pf.same_fs && !own_files_flush_) pf.closer_.reset();
  return pf;
}

}  // namespace leasefs::daemon
