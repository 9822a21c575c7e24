#include "fusefs/daemon/remount.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <string_view>
#include <utility>

#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/statvfs.h>

#include "base/status.h"
#include "fusefs/daemon/mountpoint.h"
#include "leasefs/ioctl.h"

namespace leasefs::daemon {

namespace {

constexpr long kFuseSuperMagic = 0x65735546;  // statfs f_type of every FUSE mount

int Fail(const std::string& mnt, const std::string& why) {
  std::fprintf(stderr, "leasefs: cannot remount %s: %s\n", mnt.c_str(), why.c_str());
  return 1;
}

std::string ErrnoText(int err) { return Status::Error(err).ToString(); }

class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  [[nodiscard]] int get() const { return fd_; }
  int release() { return std::exchange(fd_, -1); }

 private:
  int fd_;
};

// One LEASEFS_IOC_REMOUNT: *out gets the daemon's answer. Returns 0 or the
// ioctl's errno (EPERM: the caller may not remount).
int AskDaemon(int dir, std::string_view options, uint32_t flags, leasefs_remount* out) {
  *out = {};
  out->flags = flags;
  std::memcpy(out->options, options.data(), options.size());
  return ioctl(dir, LEASEFS_IOC_REMOUNT, out) == 0 ? 0 : errno;
}

// The items that put the daemon back as `state` says.
std::string StateItems(const leasefs_mount_state& state) {
  std::string s = state.read_only ? "ro" : "rw";
  if (state.atime == LEASEFS_ATIME_NEVER) s += ",noatime";
  if (state.atime == LEASEFS_ATIME_STRICT) s += ",strictatime";
  if (state.atime == LEASEFS_ATIME_RELATIME) s += ",relatime";
  if (state.nodiratime) s += ",nodiratime";
  return s;
}

// The mount(2) flags for MS_REMOUNT. As mount(8) computes them, the items
// are the mount point's whole new set of flags (mount(8) lists the mount's
// own before the new ones, and drops those a new one undoes): a flag is set
// when the last of it and its opposite named is the flag. Read-only and
// the atime rule are as the daemon settled them (`state`).
unsigned long MountFlags(const std::vector<std::string>& items, const leasefs_mount_state& state) {
  struct Flag {
    const char* on;
    const char* off;
    unsigned long ms;
  };
  static constexpr Flag kFlags[] = {
      {"nosuid", "suid", MS_NOSUID},     {"nodev", "dev", MS_NODEV},  {"noexec", "exec", MS_NOEXEC},
      {"sync", "async", MS_SYNCHRONOUS}, {"dirsync", "", MS_DIRSYNC}, {"silent", "loud", MS_SILENT},
  };
  unsigned long flags = 0;
  for (const auto& item : items) {
    for (const Flag& f : kFlags) {
      if (item == f.on) flags |= f.ms;
      if (item == f.off) flags &= ~f.ms;
    }
  }
  if (state.read_only) flags |= MS_RDONLY;
  if (state.atime == LEASEFS_ATIME_NEVER) {
    flags |= MS_NOATIME;
  } else if (state.atime == LEASEFS_ATIME_STRICT) {
    flags |= MS_STRICTATIME;
  } else {
    flags |= MS_RELATIME;
  }
  if (state.nodiratime) flags |= MS_NODIRATIME;
  return flags;
}

int KernelRemount(const std::string& mnt, unsigned long flags) {
  return mount(nullptr, mnt.c_str(), nullptr, MS_REMOUNT | flags, nullptr) == 0 ? 0 : errno;
}

std::string KernelRefused(int err) {
  std::string why = "the kernel refused: " + ErrnoText(err);
  if (err == EBUSY) why += " (a file is open for writing?)";
  return why;
}

// Opens the root directory of the leasefs mount at `mnt`; -1 and *why if
// it is not one.
int OpenLeasefsRoot(const std::string& mnt, std::string* why) {
  Fd dir(open(mnt.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (dir.get() < 0) {
    *why = ErrnoText(errno);
    return -1;
  }
  struct statfs sf {};
  struct stat st {};
  leasefs_version v{};
  if (fstatfs(dir.get(), &sf) != 0 || sf.f_type != kFuseSuperMagic) {
    *why = "not a FUSE mount";
  } else if (fstat(dir.get(), &st) != 0 || st.st_ino != 1) {
    *why = "not the root of a mount";
  } else if (ioctl(dir.get(), LEASEFS_IOC_VERSION, &v) != 0 ||
             !(v.features & LEASEFS_FEATURE_REMOUNT)) {
    *why = "its daemon is not a leasefs that can remount";
  } else {
    return dir.release();
  }
  return -1;
}

}  // namespace

int Remount(const std::string& mountpoint, const std::vector<std::string>& items) {
  auto canonical = CanonicalPath(mountpoint);
  if (!canonical.ok()) return Fail(mountpoint, ErrnoText(canonical.status().err()));
  const std::string& mnt = *canonical;
  std::string why;
  const int fd = OpenLeasefsRoot(mnt, &why);
  if (fd < 0) return Fail(mnt, why);
  Fd dir(fd);
  std::string list;
  for (const auto& item : items) list += (list.empty() ? "" : ",") + item;
  if (list.size() >= LEASEFS_REMOUNT_OPTIONS_MAX) return Fail(mnt, "the option list is too long");

  // What the daemon has now, and what it would have: nothing changes yet.
  auto plan = std::make_unique<leasefs_remount>();
  if (int err = AskDaemon(dir.get(), list, LEASEFS_REMOUNT_DRY_RUN, plan.get()); err != 0) {
    return Fail(mnt, err == EPERM
                         ? "only root with CAP_SYS_ADMIN may remount it (" + ErrnoText(err) + ")"
                         : ErrnoText(err));
  }
  if (plan->error != 0) return Fail(mnt, plan->message);
  // The mount point's flags as they are, to put back: statvfs has them all.
  struct statvfs sv {};
  if (fstatvfs(dir.get(), &sv) != 0) return Fail(mnt, ErrnoText(errno));
  std::vector<std::string> now_flags;
  if (sv.f_flag & ST_NOSUID) now_flags.push_back("nosuid");
  if (sv.f_flag & ST_NODEV) now_flags.push_back("nodev");
  if (sv.f_flag & ST_NOEXEC) now_flags.push_back("noexec");
  if (sv.f_flag & ST_SYNCHRONOUS) now_flags.push_back("sync");
  const unsigned long before = MountFlags(now_flags, plan->before);
  const unsigned long after = MountFlags(items, plan->after);

  auto done = std::make_unique<leasefs_remount>();
  if (plan->after.read_only && !plan->before.read_only) {
    // To read-only, the kernel first: it refuses (EBUSY) while a file is
    // open for writing, and afterwards only the daemon can still be asked
    // for a change, which it then refuses too.
    if (int err = KernelRemount(mnt, after); err != 0) return Fail(mnt, KernelRefused(err));
    const int err = AskDaemon(dir.get(), list, 0, done.get());
    if (err == 0 && done->error == 0) return 0;
    why = err != 0 ? ErrnoText(err) : std::string(done->message);
    if (int back = KernelRemount(mnt, before); back != 0)
      why += "; putting the mount point back failed too (" + ErrnoText(back) +
             "): it stays read-only";
    return Fail(mnt, why);
  }
  // Otherwise the daemon first: it may refuse read-write (a pool mounted
  // -o ro), and the kernel then opens the way to writes it accepts.
  if (int err = AskDaemon(dir.get(), list, 0, done.get()); err != 0 || done->error != 0)
    return Fail(mnt, err != 0 ? ErrnoText(err) : std::string(done->message));
  if (int err = KernelRemount(mnt, after); err != 0) {
    why = KernelRefused(err);
    const int back = AskDaemon(dir.get(), StateItems(plan->before), 0, done.get());
    if (back != 0 || done->error != 0)
      why += "; undoing the daemon's part failed too (" +
             (back != 0 ? ErrnoText(back) : std::string(done->message)) +
             "): the daemon now runs with the new options";
    return Fail(mnt, why);
  }
  return 0;
}

}  // namespace leasefs::daemon
